//! The bundled demo model (examples/seed-cnn-shapes.safetensors, trained by `gradcam train`
//! with the command in the README) on held-out shapes images. The README reports accuracy on
//! 1000 images (99.0% accuracy, 92.4% pointing at relu2); this regression guard uses 300
//! (seconds) with a margin of about two standard deviations of a 300-image estimate (~3
//! points) below the measured accuracy and pointing.

use gradcam::internal::data::shapes;
use gradcam::internal::model::Model;
use std::path::Path;

#[test]
fn bundled_model_classifies_and_points_on_held_out_shapes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-cnn-shapes.safetensors");
    let model = Model::load(&path).unwrap();
    assert_eq!(model.arch, "seed-cnn");
    assert_eq!(model.num_classes, 3);
    // The eval-pointing default stream: never used for training.
    let set = shapes::generate(300, 12345);
    let r =
        gradcam::internal::metrics::pointing::evaluate(model, &set, Some(POINTING_LAYER)).unwrap();
    assert!(
        r.classification_accuracy() >= 0.95,
        "accuracy {}",
        r.classification_accuracy()
    );
    assert!(r.accuracy() >= 0.89, "pointing accuracy {}", r.accuracy());
}

/// The layer the README's pointing-game figure uses.
const POINTING_LAYER: &str = "relu2";
