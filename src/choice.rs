//! Closed sets of named values: the architecture, the split, a backend, an image pipeline's
//! inversion and fit, where validation images come from, a learning-rate schedule. Each such
//! enum derives strum's `VariantArray`, `EnumMessage` and `EnumProperty`
//! (with `#[strum(serialize_all = "lowercase")]`, the names serde writes), and [`Choice`]
//! reads them: a front end lists, documents and parses the values from the enum alone, and the
//! library depends on no front end. Imports nothing from the crate.

/// A value of a closed set, as a front end offers it (`--model cnn|mlp`).
pub trait Choice: Copy + Send + Sync + 'static {
    /// Every value, in the order the enum declares them.
    fn all() -> &'static [Self];
    /// Its name, as typed on a command line and written in JSON (`cnn`, `train`).
    fn name(self) -> &'static str;
    /// Its doc comment, as written (lines joined by newlines), if it has one.
    fn doc(self) -> Option<&'static str>;
    /// Whether lists leave it out, though it is still accepted: a backend not compiled in
    /// (`#[strum(props(hidden = "true"))]`).
    fn hidden(self) -> bool;
}

impl<T> Choice for T
where
    T: strum::VariantArray + strum::EnumMessage + strum::EnumProperty + Copy + Send + Sync,
    T: 'static,
{
    fn all() -> &'static [Self] {
        T::VARIANTS
    }

    fn name(self) -> &'static str {
        // strum's name, in its `serialize_all` case, comes first.
        self.get_serializations()
            .first()
            .copied()
            .unwrap_or_default()
    }

    fn doc(self) -> Option<&'static str> {
        self.get_documentation()
    }

    fn hidden(self) -> bool {
        self.get_str("hidden") == Some("true")
    }
}

/// The value named `name`, if there is one.
pub fn parse<T: Choice>(name: &str) -> Option<T> {
    T::all().iter().copied().find(|value| value.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::data::SplitKind;
    use crate::data::image::Invert;
    use crate::data::pipeline::Fit;
    use crate::model::Architecture;
    use crate::train::{LrSchedule, ValidationFrom};

    /// Every value's name is the one serde writes into run.json and dataset.json, and parses
    /// back to that value.
    fn names_are_serdes<T>()
    where
        T: Choice + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        assert!(!T::all().is_empty());
        for &value in T::all() {
            assert_eq!(
                serde_json::to_value(value).unwrap(),
                serde_json::Value::from(value.name())
            );
            assert_eq!(parse::<T>(value.name()), Some(value));
        }
        assert_eq!(parse::<T>("no such value"), None);
    }

    #[test]
    fn every_choice_is_named_as_serde_names_it() {
        names_are_serdes::<Architecture>();
        names_are_serdes::<SplitKind>();
        names_are_serdes::<BackendKind>();
        names_are_serdes::<Invert>();
        names_are_serdes::<Fit>();
        names_are_serdes::<ValidationFrom>();
        names_are_serdes::<LrSchedule>();
    }

    #[test]
    fn docs_names_and_hidden_values_come_from_the_enum() {
        assert_eq!(Architecture::all(), [Architecture::Cnn, Architecture::Mlp]);
        assert_eq!(
            Architecture::Mlp.doc(),
            Some("Fully connected: Flatten-Dense128-Dense128-Dense10")
        );
        assert_eq!(Invert::Yes.doc(), None);
        assert!(
            ValidationFrom::Auto
                .doc()
                .is_some_and(|doc| doc.lines().count() == 2)
        );
        assert_eq!(BackendKind::Wgpu.hidden(), !cfg!(feature = "wgpu"));
        assert_eq!(BackendKind::Cuda.hidden(), !cfg!(feature = "cuda"));
        assert!(!BackendKind::Flex.hidden() && !BackendKind::Auto.hidden());
    }
}
