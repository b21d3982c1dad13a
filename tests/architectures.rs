//! Every supported torchvision architecture is detected from its tensor names and shapes,
//! lists PyTorch's module paths, and plans at 224×224 (and VGG also at 64×64, where the
//! feature map is smaller than the 7×7 of its adaptive average pool).

use gradcam::internal::model::{weights::WeightStore, zoo, Model};

fn build(arch: &str, classes: usize) -> Model {
    let store = WeightStore::from_tensors(arch, zoo::random_state_dict(arch, classes, 0).unwrap());
    Model::from_store(&store, None).unwrap_or_else(|e| panic!("{arch}: {e}"))
}

fn shape(m: &Model, layer: &str, size: usize) -> Vec<usize> {
    let plan = m.graph.plan(&[2, 3, size, size]).unwrap();
    plan.shapes[m.module(layer).unwrap().value].clone()
}

#[test]
fn vgg_variants_are_detected_with_torchvision_paths() {
    for (arch, last_conv, last_relu) in [
        ("vgg11", "features.18", "features.19"),
        ("vgg13", "features.22", "features.23"),
        ("vgg16", "features.28", "features.29"),
        ("vgg19", "features.34", "features.35"),
        ("vgg11_bn", "features.25", "features.27"),
        ("vgg16_bn", "features.40", "features.42"),
        ("vgg19_bn", "features.49", "features.51"),
    ] {
        // The article's VGG19 has a 10-class head: the class count comes from the weights.
        let m = build(arch, 10);
        assert_eq!(m.arch, arch);
        assert_eq!(m.num_classes, 10);
        assert_eq!(m.default_layer, last_relu, "{arch}");
        assert_eq!(shape(&m, last_conv, 224), vec![2, 512, 14, 14], "{arch}");
        assert_eq!(shape(&m, "features", 224), vec![2, 512, 7, 7], "{arch}");
        assert_eq!(
            shape(&m, "avgpool", 64),
            vec![2, 512, 7, 7],
            "{arch} at 64x64"
        );
        assert_eq!(shape(&m, "classifier", 64), vec![2, 10], "{arch}");
        assert_eq!(shape(&m, "classifier.2", 64), vec![2, 4096], "{arch}");
    }
}

#[test]
fn resnet_variants_are_detected_with_torchvision_paths() {
    for (arch, expansion) in [
        ("resnet18", 1),
        ("resnet34", 1),
        ("resnet50", 4),
        ("resnet101", 4),
        ("resnet152", 4),
    ] {
        let m = build(arch, 1000);
        assert_eq!(m.arch, arch);
        assert_eq!(m.num_classes, 1000);
        assert_eq!(m.default_layer, "layer4");
        assert_eq!(shape(&m, "layer4", 224), vec![2, 512 * expansion, 7, 7]);
        assert_eq!(shape(&m, "layer4.1.conv2", 224), vec![2, 512, 7, 7]);
        assert_eq!(shape(&m, "layer4.1.bn2", 224), vec![2, 512, 7, 7]);
        assert_eq!(
            shape(&m, "layer3.0.downsample.0", 224),
            vec![2, 256 * expansion, 14, 14]
        );
        assert_eq!(
            shape(&m, "layer3.0.downsample", 224),
            vec![2, 256 * expansion, 14, 14]
        );
        assert_eq!(shape(&m, "maxpool", 224), vec![2, 64, 56, 56]);
        assert_eq!(shape(&m, "fc", 224), vec![2, 1000]);
    }
}

#[test]
fn named_modules_are_listed_in_pytorch_order() {
    let m = build("resnet50", 10);
    let names: Vec<&str> = m.graph.modules.iter().map(|m| m.name.as_str()).collect();
    let expected = [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer1.0",
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.conv2",
        "layer1.0.bn2",
        "layer1.0.conv3",
        "layer1.0.bn3",
        "layer1.0.relu",
        "layer1.0.downsample",
        "layer1.0.downsample.0",
        "layer1.0.downsample.1",
        "layer1.1",
    ];
    assert_eq!(&names[..expected.len()], expected);
    assert_eq!(&names[names.len() - 2..], ["avgpool", "fc"]);
    let m = build("seed-cnn", 10);
    let names: Vec<&str> = m.graph.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3", "fc1",
            "relu4", "fc2"
        ]
    );
    assert_eq!(m.default_layer, "conv3");
    assert_eq!(shape(&m, "conv3", 32), vec![2, 16, 3, 3]);
}

#[test]
fn unknown_layers_suggest_the_closest_names() {
    let m = build("resnet18", 10);
    let e = m.module("layer4.1.conv").unwrap_err().to_string();
    assert!(
        e.contains("layer4.1.conv1") && e.contains("layer4.1.conv2"),
        "{e}"
    );
}

#[test]
fn arch_override_must_match_the_weights() {
    let store = WeightStore::from_tensors("w", zoo::random_state_dict("resnet18", 10, 0).unwrap());
    let e = Model::from_store(&store, Some("resnet34"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("resnet18"), "{e}");
    let store = WeightStore::from_tensors("w", zoo::random_state_dict("resnet18", 10, 0).unwrap());
    assert_eq!(
        Model::from_store(&store, Some("resnet18")).unwrap().arch,
        "resnet18"
    );
}

/// Every dimension the architecture fixes is checked, as PyTorch's `load_state_dict` does:
/// a kernel of the wrong size, a 1×1 downsample that is 3×3, a conv with no output channels or
/// a head with no classes is one error naming the tensor, never another network or a panic.
#[test]
fn shape_lies_are_errors_naming_the_tensor() {
    let cases: [(&str, &str, Vec<usize>, &str); 7] = [
        (
            "seed-cnn",
            "conv2.weight",
            vec![32, 64, 3, 3],
            "[?, 64, 5, 5]",
        ),
        (
            "seed-cnn",
            "conv2.weight",
            vec![32, 64, 4, 4],
            "[?, 64, 5, 5]",
        ),
        (
            "resnet18",
            "layer1.0.conv1.weight",
            vec![64, 64, 5, 5],
            "[?, 64, 3, 3]",
        ),
        (
            "resnet18",
            "conv1.weight",
            vec![64, 3, 3, 3],
            "[?, ?, 7, 7]",
        ),
        (
            "resnet18",
            "layer2.0.downsample.0.weight",
            vec![128, 64, 3, 3],
            "[?, 64, 1, 1]",
        ),
        ("seed-cnn", "conv3.weight", vec![0, 32, 5, 5], "0"),
        ("seed-cnn", "fc2.weight", vec![0, 2000], "0"),
    ];
    for (arch, name, shape, expected) in cases {
        let mut sd = zoo::random_state_dict(arch, 10, 0).unwrap();
        let len = shape.iter().product();
        sd.insert(
            name.into(),
            gradcam::internal::tensor::Tensor::new(shape.clone(), vec![0.5; len]),
        );
        if name == "fc2.weight" {
            sd.insert(
                "fc2.bias".into(),
                gradcam::internal::tensor::Tensor::new(vec![0], vec![]),
            );
        }
        if name == "conv3.weight" {
            sd.insert(
                "conv3.bias".into(),
                gradcam::internal::tensor::Tensor::new(vec![0], vec![]),
            );
        }
        let store = WeightStore::from_tensors(arch, sd);
        let err = match Model::from_store(&store, None) {
            // A conv without outputs builds (its next layer then takes 0 inputs) but never
            // plans: an error there too.
            Ok(m) => m
                .graph
                .plan(&[1, 3, 32, 32])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| panic!("{arch} with {name} {shape:?} was accepted")),
            Err(e) => e.to_string(),
        };
        assert!(
            (err.contains(name) || err.contains("0 outputs") || err.contains("empty"))
                && err.contains(expected),
            "{arch} {name} {shape:?}: {err}"
        );
    }
}
