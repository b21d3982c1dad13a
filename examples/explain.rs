//! Grad-CAM of one photo with the library, written as an overlay:
//! `cargo run --release --example explain -- resnet50.safetensors photo.jpg overlay.png`
use gradcam::{image, Explainer, Model, Targets};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, photo, out] = &args[..] else {
        return Err("usage: explain WEIGHTS.safetensors PHOTO OUT.png".into());
    };
    let model = Model::load(weights)?; // a torchvision state_dict, or an exported graph
    let input = model.preprocessing().apply(&image::decode(photo)?); // resize, crop, normalize
    let explainer = Explainer::builder(model).build()?; // Grad-CAM, default layer, best backend
    let e = explainer.explain(&input.batch(), Targets::Top)?;
    if let Some(why) = &e.failures[0] {
        return Err(why.clone().into()); // a non-finite input, logit or map: no picture
    }
    println!("class {} (p = {:.3})", e.classes[0], e.probabilities[0]);
    image::overlay(&input.rgb, e.maps[0].image(0), 0.5)?.save(out)?;
    Ok(())
}
