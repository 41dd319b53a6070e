//! Value parsers for flags whose range the type alone does not say, and for the library's
//! enums ([`choice`]); clap reports a value they refuse as a usage error (exit status 2),
//! naming the flag.

use std::marker::PhantomData;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use mnist_cnn::choice::Choice;

/// The values of one of the library's enums (`--model`, `--split`, `--backend`, ...), listed
/// and documented in `--help` from the enum's names and doc comments, as clap's `ValueEnum`
/// would: `value_parser = values::choice::<Architecture>()`.
pub fn choice<T: Choice>() -> ChoiceParser<T> {
    ChoiceParser(PhantomData)
}

#[derive(Clone, Copy)]
pub struct ChoiceParser<T>(PhantomData<T>);

impl<T: Choice> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        // clap's own parser of possible values checks the text and words the error (the
        // values it lists, the flag it names) exactly as for clap's `ValueEnum`.
        let values: Vec<PossibleValue> = T::all().iter().map(|&value| possible(value)).collect();
        let text = PossibleValuesParser::new(values.clone()).parse_ref(cmd, arg, value)?;
        let ignore_case = arg.is_some_and(clap::Arg::is_ignore_case_set);
        let found = values
            .iter()
            .position(|value| value.matches(&text, ignore_case))
            .and_then(|index| T::all().get(index));
        Ok(*found.expect("the possible values are the enum's, in its order"))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(T::all().iter().map(|&value| possible(value))))
    }
}

/// A value as clap lists it: its name, its doc comment as clap's derive shapes a doc comment
/// into help (the first paragraph on one line, without a final period), hidden or not.
fn possible<T: Choice>(value: T) -> PossibleValue {
    let help = value.doc().map(|doc| {
        let paragraph: Vec<&str> = doc
            .lines()
            .map(str::trim)
            .take_while(|line| !line.is_empty())
            .collect();
        let mut help = paragraph.join(" ");
        if help.ends_with('.') && !help.ends_with("..") {
            help.pop();
        }
        help
    });
    let possible = PossibleValue::new(value.name()).hide(value.hidden());
    match help {
        Some(help) => possible.help(help),
        None => possible,
    }
}

/// A count of at least 1.
pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// A count from 1 to `max`.
fn count_up_to(text: &str, max: usize) -> Result<usize, String> {
    match text.trim().parse::<u128>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(value) if value > max as u128 => Err(format!("at most {max}")),
        Ok(value) => Ok(value as usize),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// A batch size `bench` measures: 1 to 65,536.
pub fn bench_batch_size(text: &str) -> Result<usize, String> {
    count_up_to(text, mnist_cnn::bench::MAX_BATCH_SIZE)
}

/// Images `bench` times per configuration: 1 to 10 million.
pub fn bench_images(text: &str) -> Result<usize, String> {
    count_up_to(text, mnist_cnn::bench::MAX_IMAGES)
}

/// Threads for tensor work: 1 to 1024.
pub fn threads(text: &str) -> Result<usize, String> {
    const MAX: usize = 1024;
    let value = positive(text)?;
    if value > MAX {
        return Err(format!("at most {MAX} threads"));
    }
    Ok(value)
}

/// A finite number above 0.
pub fn positive_number(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        Ok(_) => Err("must be a finite number above 0".into()),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// A pixel scale: a number or a fraction above 0, such as `1` or `1/255`.
pub fn pixel_scale(text: &str) -> Result<f64, String> {
    mnist_cnn::exchange::parse_pixel_scale(text)
        .ok_or_else(|| format!("`{text}` is not a number or fraction above 0 (such as 1 or 1/255)"))
}

/// A fraction in [0, 1).
pub fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..1.0).contains(&value) => Ok(value),
        Ok(_) => Err("must be at least 0 and below 1".into()),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// Seconds of a timeout: 1 second to 1 day.
pub fn timeout_seconds(text: &str) -> Result<u64, String> {
    const DAY: u64 = 86_400;
    match text.trim().parse::<u64>() {
        Ok(value) if (1..=DAY).contains(&value) => Ok(value),
        Ok(_) => Err(format!("must be 1 to {DAY} seconds")),
        Err(_) => Err(format!("`{text}` is not a whole number of seconds")),
    }
}

/// A host name as a `Host` header gives it, without a port: letters, digits, `-` and `.`.
pub fn host_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !text.starts_with(['-', '.']);
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{text}` is not a host name (letters, digits, `-` and `.`, without a port)"
        ))
    }
}

/// A path for a PNG picture: its name must end in `.png`, so that a `.jpg` or `.svg` name never
/// holds PNG bytes.
pub fn png_path(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    match path.extension().and_then(|e| e.to_str()) {
        Some(extension) if extension.eq_ignore_ascii_case("png") => Ok(path),
        Some(extension) => Err(format!(
            "only PNG pictures can be written, and `.{extension}` names another format; use a name ending in .png"
        )),
        None => Err("the name must end in .png".into()),
    }
}

/// A run's name: letters, digits, `.`, `_` and `-` (see `catalog::check_label`).
pub fn run_name(text: &str) -> Result<String, String> {
    mnist_cnn::run::catalog::check_label(text)
        .map(|()| text.to_string())
        .map_err(|e| e.to_string())
}

/// An image size as WIDTHxHEIGHT, or one number for a square.
pub fn image_size(text: &str) -> Result<(u32, u32), String> {
    let parse = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{text}` is not a size like 28x28"))
    };
    match text.split_once(['x', 'X']) {
        Some((width, height)) => Ok((parse(width)?, parse(height)?)),
        None => parse(text).map(|side| (side, side)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(positive("0").is_err());
        assert_eq!(positive("3"), Ok(3));
        assert!(threads("1025").is_err());
        assert!(bench_batch_size("18446744073709551615").is_err());
        assert!(bench_batch_size("99999999999999999999999").is_err());
        assert_eq!(bench_batch_size("65536"), Ok(65_536));
        assert!(bench_images("1000000000").is_err());
        assert_eq!(bench_images("10000000"), Ok(10_000_000));
        assert!(positive_number("inf").is_err());
        assert!(positive_number("-1").is_err());
        assert!(fraction("1").is_err());
        assert_eq!(fraction("0"), Ok(0.0));
        assert!(timeout_seconds("9223372036854775807").is_err());
        assert_eq!(image_size("64"), Ok((64, 64)));
        assert_eq!(image_size("32x16"), Ok((32, 16)));
        assert!(png_path("x.PNG").is_ok());
        assert!(png_path("x.jpg").unwrap_err().contains(".jpg"));
        assert!(png_path("x").is_err());
        assert_eq!(host_name("Box.Local"), Ok("box.local".into()));
        for bad in ["", "box:8080", "a/b", "-x", "é"] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_choice_parses_its_names_and_lists_its_shown_values_with_their_help() {
        use mnist_cnn::backend::BackendKind;
        use mnist_cnn::train::ValidationFrom;
        let command = clap::Command::new("t");
        let parser = choice::<BackendKind>();
        assert_eq!(
            parser
                .parse_ref(&command, None, "ndarray".as_ref())
                .unwrap(),
            BackendKind::Ndarray
        );
        // A backend not compiled in is accepted (the library then says which feature to
        // build with) but not listed.
        assert_eq!(
            parser.parse_ref(&command, None, "wgpu".as_ref()).unwrap(),
            BackendKind::Wgpu
        );
        let error = parser
            .parse_ref(&command, None, "gpu".as_ref())
            .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
        let shown: Vec<String> = parser
            .possible_values()
            .unwrap()
            .filter(|value| !value.is_hide_set())
            .map(|value| value.get_name().to_string())
            .collect();
        let mut expected = vec!["flex", "ndarray"];
        expected.extend(cfg!(feature = "wgpu").then_some("wgpu"));
        expected.extend(cfg!(feature = "cuda").then_some("cuda"));
        expected.push("auto");
        assert_eq!(shown, expected);
        // Two lines of doc comment become one line of help, as clap's derive makes them.
        let auto = choice::<ValidationFrom>()
            .possible_values()
            .unwrap()
            .next()
            .unwrap();
        assert_eq!(
            auto.get_help().unwrap().to_string(),
            "The last fraction (Keras) when it holds the same classes as the rest, as on data in \
             random order; a seeded stratified pick when it does not, as on data sorted by class"
        );
    }
}
