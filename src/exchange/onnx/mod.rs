//! A network as an ONNX model of standard operators (opset 17): input `pixels`, float32
//! `[N, C, H, W]` raw pixel values 0-255 with a dynamic batch `N`; the graph divides them by
//! 255 (as this tool does), then runs the network (`Conv`, `Relu`, `MaxPool`, `Flatten`,
//! `Gemm`) and a `Softmax`: output `probabilities`, `[N, classes]`. The class names and the
//! image pipeline go into the model's metadata. Nodes and intermediate values carry Keras's
//! layer names, so Netron shows the tutorial's model.

mod proto;

use prost::Message;

use super::weights::ModelWeights;
use crate::model::Architecture;
use proto::{
    ATTRIBUTE_INT, ATTRIBUTE_INTS, AttributeProto, Dimension, DimensionValue, FLOAT, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// The operator set the graph is written for, and the IR version that goes with it.
pub(crate) const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;
pub(crate) const INPUT: &str = "pixels";
pub(crate) const OUTPUT: &str = "probabilities";

/// The ONNX model's bytes for `weights`, with `metadata` (key, value) in its properties.
pub(crate) fn model_bytes(weights: &ModelWeights, metadata: &[(&str, String)]) -> Vec<u8> {
    let shape = weights.shape;
    let mut graph = Graph::default();
    graph.constant("pixel_divisor", vec![], vec![255.0]);
    graph.node("Div", "scale", &[INPUT, "pixel_divisor"], vec![]);
    let mut layers = weights.layers.iter();
    if weights.architecture == Architecture::Cnn {
        for (conv, pool) in [("conv2d", "max_pooling2d"), ("conv2d_1", "max_pooling2d_1")] {
            let layer = layers.next().expect("checked: two convolutions");
            let (weight, bias) = graph.parameters(layer);
            let input = graph.last.clone();
            graph.node(
                "Conv",
                conv,
                &[&input, &weight, &bias],
                vec![
                    ints("kernel_shape", &[3, 3]),
                    ints("pads", &[1, 1, 1, 1]),
                    ints("strides", &[1, 1]),
                ],
            );
            let input = graph.last.clone();
            graph.node("Relu", &format!("{conv}_relu"), &[&input], vec![]);
            let input = graph.last.clone();
            graph.node(
                "MaxPool",
                pool,
                &[&input],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            );
        }
    }
    let input = graph.last.clone();
    graph.node("Flatten", "flatten", &[&input], vec![int("axis", 1)]);
    for (index, name) in ["dense", "dense_1", "dense_2"].into_iter().enumerate() {
        let layer = layers.next().expect("checked: three dense layers");
        let (weight, bias) = graph.parameters(layer);
        let input = graph.last.clone();
        graph.node("Gemm", name, &[&input, &weight, &bias], vec![]);
        if index < 2 {
            let input = graph.last.clone();
            graph.node("Relu", &format!("{name}_relu"), &[&input], vec![]);
        }
    }
    let input = graph.last.clone();
    graph.nodes.push(NodeProto {
        input: vec![input],
        output: vec![OUTPUT.into()],
        name: "softmax".into(),
        op_type: "Softmax".into(),
        attribute: vec![int("axis", 1)],
        ..NodeProto::default()
    });
    let batch = || Dimension {
        value: Some(DimensionValue::DimParam("N".into())),
    };
    let fixed = |n: usize| Dimension {
        value: Some(DimensionValue::DimValue(n as i64)),
    };
    let value_info = |name: &str, dims: Vec<Dimension>, doc: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
        doc_string: doc.into(),
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "mnist-cnn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: format!(
            "The {} of mnist-cnn: raw pixels 0-255 in, a probability per class out",
            weights.architecture
        ),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: format!("mnist-cnn-{}", weights.architecture),
            initializer: graph.initializers,
            doc_string: String::new(),
            input: vec![value_info(
                INPUT,
                vec![
                    batch(),
                    fixed(shape.channels),
                    fixed(shape.rows),
                    fixed(shape.cols),
                ],
                "raw pixel values 0-255, channels first",
            )],
            output: vec![value_info(
                OUTPUT,
                vec![batch(), fixed(shape.classes)],
                "the probability of each class",
            )],
        }),
        metadata_props: metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: (*key).into(),
                value: value.clone(),
            })
            .collect(),
    };
    model.encode_to_vec()
}

/// Nodes and initializers, each node reading the output of the one before.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// The name of the last node's output.
    last: String,
}

impl Graph {
    fn constant(&mut self, name: &str, dims: Vec<usize>, values: Vec<f32>) {
        self.initializers.push(TensorProto {
            dims: dims.into_iter().map(|d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }

    /// The layer's weight and bias as initializers named as in PyTorch (`conv1.weight`).
    /// Dense weights stay `[inputs, outputs]`, which is `Gemm`'s `B` without transposition.
    fn parameters(&mut self, layer: &super::weights::Layer) -> (String, String) {
        let weight = format!("{}.weight", layer.name);
        let bias = format!("{}.bias", layer.name);
        self.constant(&weight, layer.dims.clone(), layer.weight.clone());
        self.constant(&bias, vec![layer.bias.len()], layer.bias.clone());
        (weight, bias)
    }

    /// A node named `name` whose output is called `name` too.
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|i| (*i).to_string()).collect(),
            output: vec![name.into()],
            name: name.into(),
            op_type: op.into(),
            attribute,
            domain: String::new(),
        });
        self.last = name.into();
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: ATTRIBUTE_INTS,
        ..AttributeProto::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: ATTRIBUTE_INT,
        ..AttributeProto::default()
    }
}

/// The operators of an ONNX model's graph, in order, with its opset, input and output
/// shapes (a number, or the name of a dynamic dimension) and metadata: what tests look at.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub opset: i64,
    pub operators: Vec<String>,
    pub input: Vec<String>,
    pub output: Vec<String>,
    pub metadata: Vec<(String, String)>,
}

/// Decodes an ONNX model's bytes into a [`Summary`].
pub fn summary(bytes: &[u8]) -> Result<Summary, String> {
    let model = ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model ({e})"))?;
    let graph = model.graph.ok_or("no graph")?;
    let dims = |values: &[ValueInfoProto]| -> Vec<String> {
        values
            .first()
            .and_then(|v| v.r#type.as_ref())
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimensionValue::DimValue(n)) => n.to_string(),
                        Some(DimensionValue::DimParam(p)) => p.clone(),
                        None => "?".into(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Summary {
        opset: model.opset_import.first().map_or(0, |o| o.version),
        operators: graph.node.iter().map(|n| n.op_type.clone()).collect(),
        input: dims(&graph.input),
        output: dims(&graph.output),
        metadata: model
            .metadata_props
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect(),
    })
}
