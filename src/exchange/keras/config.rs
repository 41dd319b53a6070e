//! A Keras model's architecture, read from its `config.json` (or a legacy `.h5` file's
//! `model_config`), and checked layer by layer against this tool's architectures. A model
//! that differs is refused with the first layer that differs, in Keras's own terms.

use serde_json::Value;

use super::super::weights::{CNN_FILTERS, HIDDEN_UNITS};
use crate::model::Architecture;
use crate::run::provenance::Rescaling;

/// A layer of a Sequential model, as far as this tool cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KerasLayer {
    /// Keras's class name: `Conv2D`, `Dense`, ...
    pub class: String,
    /// The layer's name in the model (`conv2d_1`).
    pub name: String,
    config: Value,
}

/// What the model is: its layers after the input (and after a leading `Rescaling`), the
/// image size it was built for, and the rescaling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelConfig {
    pub layers: Vec<KerasLayer>,
    /// `(rows, cols, channels)` from the input layer or the build configuration.
    pub input: Option<[usize; 3]>,
    pub rescaling: Option<Rescaling>,
}

/// Reads a model configuration: a Sequential model's JSON, as Keras 3's `config.json` or a
/// legacy file's `model_config` holds it (Keras 2's too).
pub(crate) fn parse(json: &[u8]) -> Result<ModelConfig, String> {
    let root: Value = serde_json::from_slice(json)
        .map_err(|e| format!("the model configuration is not JSON ({e})"))?;
    let class = root["class_name"].as_str().unwrap_or("");
    if class != "Sequential" {
        let what = if class.is_empty() {
            "no model class".to_string()
        } else {
            format!("a {class} model")
        };
        return Err(format!(
            "the configuration describes {what}; only Sequential models (the tutorial's) can be imported"
        ));
    }
    let layers = root["config"]["layers"]
        .as_array()
        .ok_or("the configuration lists no layers")?;
    let mut input = shape_of(&root["build_config"]["input_shape"])
        .or_else(|| shape_of(&root["config"]["build_input_shape"]));
    let mut rescaling = None;
    let mut kept = Vec::new();
    for (index, layer) in layers.iter().enumerate() {
        let class = layer["class_name"]
            .as_str()
            .ok_or_else(|| format!("layer {} has no class name", index + 1))?
            .to_string();
        let config = layer["config"].clone();
        let name = config["name"].as_str().unwrap_or("").to_string();
        // Keras 3's InputLayer, or Keras 2's input shape on the first layer.
        for key in ["batch_shape", "batch_input_shape"] {
            if let Some(shape) = shape_of(&config[key]) {
                input = Some(shape);
            }
        }
        if class == "InputLayer" {
            continue;
        }
        if class == "Rescaling" && kept.is_empty() && rescaling.is_none() {
            let number = |key: &str| match &config[key] {
                Value::Null => Ok(if key == "offset" { 0.0 } else { 1.0 }),
                value => value.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                    format!("its Rescaling layer has a {key} of {value}, not a number")
                }),
            };
            rescaling = Some(Rescaling {
                scale: number("scale")?,
                offset: number("offset")?,
            });
            continue;
        }
        kept.push(KerasLayer {
            class,
            name,
            config,
        });
    }
    Ok(ModelConfig {
        layers: kept,
        input,
        rescaling,
    })
}

/// `[null, 28, 28, 1]` -> `(28, 28, 1)`.
fn shape_of(value: &Value) -> Option<[usize; 3]> {
    let dims = value.as_array()?;
    let [_, rows, cols, channels] = dims.as_slice() else {
        return None;
    };
    let dim = |v: &Value| v.as_u64().and_then(|v| usize::try_from(v).ok());
    Some([dim(rows)?, dim(cols)?, dim(channels)?])
}

/// The tool's layers of `architecture`, described as Keras's configurations describe them.
/// The output layer has `classes` units.
fn expected(architecture: Architecture, classes: usize) -> Vec<String> {
    let dense =
        |units: usize, activation: &str| format!("Dense({units}, activation=\"{activation}\")");
    let mut layers = Vec::new();
    if architecture == Architecture::Cnn {
        for filters in CNN_FILTERS {
            layers.push(format!(
                "Conv2D({filters}, (3, 3), padding=\"same\", activation=\"relu\")"
            ));
            layers.push("MaxPooling2D((2, 2))".to_string());
        }
    }
    layers.push("Flatten()".to_string());
    layers.push(dense(HIDDEN_UNITS, "relu"));
    layers.push(dense(HIDDEN_UNITS, "relu"));
    layers.push(dense(classes, "softmax"));
    layers
}

impl KerasLayer {
    /// The layer as Keras code would write it, with every setting that matters to this tool
    /// and that differs from Keras's default: `Conv2D(16, (3, 3), padding="same",
    /// activation="relu")`.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let pair = |key: &str, default: [u64; 2]| -> [u64; 2] {
            match &c[key] {
                Value::Array(v) if v.len() == 2 => [
                    v[0].as_u64().unwrap_or(u64::MAX),
                    v[1].as_u64().unwrap_or(u64::MAX),
                ],
                Value::Number(n) => [n.as_u64().unwrap_or(u64::MAX); 2],
                _ => default,
            }
        };
        let text = |key: &str| match &c[key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let mut extras = Vec::new();
        let mut extra = |condition: bool, setting: String| {
            if condition {
                extras.push(setting);
            }
        };
        let format_pair = |p: [u64; 2]| format!("({}, {})", p[0], p[1]);
        let data_format = text("data_format");
        let main = match self.class.as_str() {
            "Conv2D" => {
                let padding = text("padding");
                let activation = text("activation");
                extra(!padding.is_empty(), format!("padding=\"{padding}\""));
                extra(
                    !activation.is_empty() && activation != "linear",
                    format!("activation=\"{activation}\""),
                );
                let strides = pair("strides", [1, 1]);
                extra(
                    strides != [1, 1],
                    format!("strides={}", format_pair(strides)),
                );
                let dilation = pair("dilation_rate", [1, 1]);
                extra(
                    dilation != [1, 1],
                    format!("dilation_rate={}", format_pair(dilation)),
                );
                let groups = c["groups"].as_u64().unwrap_or(1);
                extra(groups != 1, format!("groups={groups}"));
                extra(c["use_bias"] == false, "use_bias=False".into());
                extra(
                    data_format == "channels_first",
                    "data_format=\"channels_first\"".into(),
                );
                format!(
                    "{}, {}",
                    c["filters"],
                    format_pair(pair("kernel_size", [0, 0]))
                )
            }
            "MaxPooling2D" => {
                let pool = pair("pool_size", [2, 2]);
                let strides = pair("strides", pool);
                extra(strides != pool, format!("strides={}", format_pair(strides)));
                let padding = text("padding");
                extra(
                    !padding.is_empty() && padding != "valid",
                    format!("padding=\"{padding}\""),
                );
                extra(
                    data_format == "channels_first",
                    "data_format=\"channels_first\"".into(),
                );
                format_pair(pool)
            }
            "Flatten" => {
                extra(
                    data_format == "channels_first",
                    "data_format=\"channels_first\"".into(),
                );
                String::new()
            }
            "Dense" => {
                let activation = text("activation");
                extra(
                    !activation.is_empty() && activation != "linear",
                    format!("activation=\"{activation}\""),
                );
                extra(c["use_bias"] == false, "use_bias=False".into());
                c["units"].to_string()
            }
            _ => "...".to_string(),
        };
        let arguments: Vec<String> = std::iter::once(main)
            .filter(|m| !m.is_empty())
            .chain(extras)
            .collect();
        format!("{}({})", self.class, arguments.join(", "))
    }

    /// A Dense layer's units.
    pub fn units(&self) -> Option<usize> {
        self.config["units"]
            .as_u64()
            .and_then(|u| usize::try_from(u).ok())
    }
}

/// Which of the tool's architectures the model is, and its number of classes; or the first
/// layer that differs from the architecture it comes closest to, as one line.
pub(crate) fn check(model: &ModelConfig) -> Result<(Architecture, usize), String> {
    let first = model.layers.first().ok_or("the model has no layers")?;
    let architecture = if first.class == "Flatten" || first.class == "Dense" {
        Architecture::Mlp
    } else {
        Architecture::Cnn
    };
    let classes = model
        .layers
        .last()
        .filter(|layer| layer.class == "Dense")
        .and_then(KerasLayer::units)
        .unwrap_or(0);
    let wanted = expected(architecture, classes.max(2));
    for (index, want) in wanted.iter().enumerate() {
        let Some(layer) = model.layers.get(index) else {
            return Err(format!(
                "it ends after layer {index}, where the tool's {architecture} goes on with {want}"
            ));
        };
        let got = layer.describe();
        if got != *want {
            return Err(format!(
                "layer {} ({}) is {got}, where the tool's {architecture} has {want}",
                index + 1,
                layer.name
            ));
        }
    }
    if let Some(extra) = model.layers.get(wanted.len()) {
        return Err(format!(
            "layer {} ({}) is {}, after the last layer of the tool's {architecture}",
            wanted.len() + 1,
            extra.name,
            extra.describe()
        ));
    }
    if classes < 2 {
        return Err(format!(
            "its output layer has {classes} units; at least 2 classes are needed"
        ));
    }
    Ok((architecture, classes))
}

/// The keys under which Keras 3 stores the weights of a Sequential model's layers that have
/// weights (`layers/conv2d`, `layers/conv2d_1`, `layers/dense`, ...): the class name in snake
/// case, numbered from the second layer of a class on, whatever the layers are called.
pub(crate) fn weight_keys(architecture: Architecture) -> Vec<&'static str> {
    match architecture {
        Architecture::Cnn => vec!["conv2d", "conv2d_1", "dense", "dense_1", "dense_2"],
        Architecture::Mlp => vec!["dense", "dense_1", "dense_2"],
    }
}

/// The layers of `model` that hold weights, in order.
pub(crate) fn weighted_layers(model: &ModelConfig) -> Vec<&KerasLayer> {
    model
        .layers
        .iter()
        .filter(|layer| layer.class == "Conv2D" || layer.class == "Dense")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential(layers: &str) -> Vec<u8> {
        format!(
            r#"{{"class_name": "Sequential", "config": {{"name": "m", "layers": [
                {{"class_name": "InputLayer", "config": {{"batch_shape": [null, 28, 28, 1], "name": "input"}}}},
                {layers}]}}}}"#
        )
        .into_bytes()
    }

    fn conv(filters: usize, kernel: usize, padding: &str) -> String {
        format!(
            r#"{{"class_name": "Conv2D", "config": {{"name": "conv2d", "filters": {filters}, "kernel_size": [{kernel}, {kernel}], "strides": [1, 1], "padding": "{padding}", "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "relu", "use_bias": true}}}}"#
        )
    }

    const POOL: &str = r#"{"class_name": "MaxPooling2D", "config": {"name": "max_pooling2d", "pool_size": [2, 2], "padding": "valid", "strides": [2, 2]}}"#;
    const FLATTEN: &str = r#"{"class_name": "Flatten", "config": {"name": "flatten"}}"#;

    fn dense(units: usize, activation: &str) -> String {
        format!(
            r#"{{"class_name": "Dense", "config": {{"name": "dense", "units": {units}, "activation": "{activation}", "use_bias": true}}}}"#
        )
    }

    fn cnn_layers(first: &str, last: &str) -> String {
        [
            first.to_string(),
            POOL.into(),
            conv(32, 3, "same"),
            POOL.into(),
            FLATTEN.into(),
            dense(128, "relu"),
            dense(128, "relu"),
            last.to_string(),
        ]
        .join(",")
    }

    #[test]
    fn the_tutorials_cnn_and_the_mlp_are_recognised() {
        let model = parse(&sequential(&cnn_layers(
            &conv(16, 3, "same"),
            &dense(10, "softmax"),
        )))
        .unwrap();
        assert_eq!(model.input, Some([28, 28, 1]));
        assert_eq!(check(&model), Ok((Architecture::Cnn, 10)));
        let mlp = [
            FLATTEN.to_string(),
            dense(128, "relu"),
            dense(128, "relu"),
            dense(3, "softmax"),
        ]
        .join(",");
        assert_eq!(
            check(&parse(&sequential(&mlp)).unwrap()),
            Ok((Architecture::Mlp, 3))
        );
    }

    #[test]
    fn the_first_layer_that_differs_is_named() {
        let model = parse(&sequential(&cnn_layers(
            &conv(8, 5, "valid"),
            &dense(10, "softmax"),
        )))
        .unwrap();
        let error = check(&model).unwrap_err();
        assert_eq!(
            error,
            "layer 1 (conv2d) is Conv2D(8, (5, 5), padding=\"valid\", activation=\"relu\"), \
             where the tool's cnn has Conv2D(16, (3, 3), padding=\"same\", activation=\"relu\")"
        );
        let logits = parse(&sequential(&cnn_layers(
            &conv(16, 3, "same"),
            &dense(10, "linear"),
        )))
        .unwrap();
        assert!(
            check(&logits)
                .unwrap_err()
                .contains("layer 8 (dense) is Dense(10)")
        );
        let short = parse(&sequential(
            &[FLATTEN.to_string(), dense(128, "relu")].join(","),
        ))
        .unwrap();
        assert!(
            check(&short)
                .unwrap_err()
                .starts_with("it ends after layer 2")
        );
        let longer = format!(
            "{},{}",
            cnn_layers(&conv(16, 3, "same"), &dense(10, "softmax")),
            dense(10, "softmax")
        );
        assert!(
            check(&parse(&sequential(&longer)).unwrap())
                .unwrap_err()
                .starts_with("layer 9 (dense)")
        );
    }

    #[test]
    fn rescaling_and_other_models_are_read() {
        let layers = format!(
            r#"{{"class_name": "Rescaling", "config": {{"name": "r", "scale": 0.00392156862745098, "offset": 0.0}}}},{}"#,
            [
                FLATTEN.to_string(),
                dense(128, "relu"),
                dense(128, "relu"),
                dense(10, "softmax")
            ]
            .join(",")
        );
        let model = parse(&sequential(&layers)).unwrap();
        assert_eq!(
            model.rescaling,
            Some(Rescaling {
                scale: 1.0 / 255.0,
                offset: 0.0
            })
        );
        assert_eq!(model.layers.len(), 4);
        assert!(
            parse(br#"{"class_name": "Functional", "config": {}}"#)
                .unwrap_err()
                .contains("Functional model")
        );
        assert!(parse(b"{").unwrap_err().contains("not JSON"));
        assert!(
            parse(br#"{"class_name": "Sequential"}"#)
                .unwrap_err()
                .contains("no layers")
        );
    }
}
