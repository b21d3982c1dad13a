//! The attribution methods `explain --method` takes: what each needs from the engine, and
//! what it returns.

use crate::ops::CamCombine;

/// One attribution method. The CAMs follow pytorch-grad-cam 1.5.x; saliency, deconvnet and
/// occlusion kazuto1011/grad-cam-pytorch; integrated gradients Captum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Grad-CAM: channels weighted by their mean gradient.
    Gradcam,
    /// HiResCAM: gradient ⊙ activation, summed over channels.
    Hirescam,
    /// Grad-CAM element-wise: ReLU(gradient ⊙ activation), summed over channels.
    GradcamElementwise,
    /// Grad-CAM++: channels weighted by positive gradients times α (its closed form).
    GradcamPlusPlus,
    /// XGrad-CAM: channels weighted by Σ gradient·activation / Σ activation.
    Xgradcam,
    /// LayerCAM: ReLU(gradient) ⊙ activation, summed over channels.
    Layercam,
    /// Eigen-Grad-CAM: first principal component of gradient ⊙ activation.
    Eigengradcam,
    /// FullGrad: |input·gradient| plus |bias·gradient| of every conv and BatchNorm (no layer).
    Fullgrad,
    /// EigenCAM: first principal component of the activation (no gradient).
    Eigencam,
    /// ScoreCAM: softmax of the scores of the input masked by each upsampled channel.
    Scorecam,
    /// AblationCAM: relative score drop when each channel is ablated.
    Ablationcam,
    /// FEM: channels weighted by the share of pixels above mean + 2·std (no gradient).
    Fem,
    /// Random channel weights in [-1, 1): the baseline for the metrics.
    Random,
    /// Guided backpropagation (kazuto1011): d score / d input through guided ReLUs.
    GuidedBackprop,
    /// Guided Grad-CAM (kazuto1011): guided backpropagation × Grad-CAM.
    GuidedGradcam,
    /// Saliency (vanilla backpropagation): d score / d input.
    Saliency,
    /// Deconvnet (kazuto1011): ReLUs pass back ReLU(gradient), ignoring the forward mask.
    Deconvnet,
    /// Occlusion sensitivity (kazuto1011): score with a patch filled minus the plain score.
    Occlusion,
    /// Integrated gradients (Captum): input × mean gradient on the path from a zero baseline.
    IntegratedGradients,
}

/// What a method's map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// [N, H, W] in [0, 1] at the input size: drawn as a JET heatmap and an overlay.
    Cam,
    /// [N, C, H, W], signed, like the input: drawn as kazuto1011's gradient image.
    Gradient,
    /// [N, h, w] score differences on the occlusion grid: drawn with a diverging colormap
    /// centred on 0.
    Signed,
}

impl crate::named::Named for Method {
    const ALL: &'static [Self] = &[
        Method::Gradcam,
        Method::Hirescam,
        Method::GradcamElementwise,
        Method::GradcamPlusPlus,
        Method::Xgradcam,
        Method::Layercam,
        Method::Eigengradcam,
        Method::Fullgrad,
        Method::Eigencam,
        Method::Scorecam,
        Method::Ablationcam,
        Method::Fem,
        Method::Random,
        Method::GuidedBackprop,
        Method::GuidedGradcam,
        Method::Saliency,
        Method::Deconvnet,
        Method::Occlusion,
        Method::IntegratedGradients,
    ];
    const WHAT: &'static str = "method";

    fn name(self) -> &'static str {
        Method::name(self)
    }

    fn about(self) -> &'static str {
        match self {
            Method::Gradcam => "Grad-CAM: channels weighted by their mean gradient.",
            Method::Hirescam => "HiResCAM: gradient ⊙ activation, summed over channels.",
            Method::GradcamElementwise => "Grad-CAM element-wise: ReLU(gradient ⊙ activation), summed over channels.",
            Method::GradcamPlusPlus => "Grad-CAM++: channels weighted by positive gradients times α (its closed form).",
            Method::Xgradcam => "XGrad-CAM: channels weighted by Σ gradient·activation / Σ activation.",
            Method::Layercam => "LayerCAM: ReLU(gradient) ⊙ activation, summed over channels.",
            Method::Eigengradcam => "Eigen-Grad-CAM: first principal component of gradient ⊙ activation.",
            Method::Fullgrad => "FullGrad: |input·gradient| plus |bias·gradient| of every conv and BatchNorm (no layer).",
            Method::Eigencam => "EigenCAM: first principal component of the activation (no gradient).",
            Method::Scorecam => "ScoreCAM: softmax of the scores of the input masked by each upsampled channel.",
            Method::Ablationcam => "AblationCAM: relative score drop when each channel is ablated.",
            Method::Fem => "FEM: channels weighted by the share of pixels above mean + 2·std (no gradient).",
            Method::Random => "Random channel weights in [-1, 1): the baseline for the metrics.",
            Method::GuidedBackprop => "Guided backpropagation (kazuto1011): d score / d input through guided ReLUs.",
            Method::GuidedGradcam => "Guided Grad-CAM (kazuto1011): guided backpropagation × Grad-CAM.",
            Method::Saliency => "Saliency (vanilla backpropagation): d score / d input.",
            Method::Deconvnet => "Deconvnet (kazuto1011): ReLUs pass back ReLU(gradient), ignoring the forward mask.",
            Method::Occlusion => "Occlusion sensitivity (kazuto1011): score with a patch filled minus the plain score.",
            Method::IntegratedGradients => "Integrated gradients (Captum): input × mean gradient on the path from a zero baseline.",
        }
    }
}

impl Method {
    /// Its name on the command line and in output file names.
    pub fn name(self) -> &'static str {
        match self {
            Method::Gradcam => "gradcam",
            Method::Hirescam => "hirescam",
            Method::GradcamElementwise => "gradcam-elementwise",
            Method::GradcamPlusPlus => "gradcam++",
            Method::Xgradcam => "xgradcam",
            Method::Layercam => "layercam",
            Method::Eigengradcam => "eigengradcam",
            Method::Fullgrad => "fullgrad",
            Method::Eigencam => "eigencam",
            Method::Scorecam => "scorecam",
            Method::Ablationcam => "ablationcam",
            Method::Fem => "fem",
            Method::Random => "random",
            Method::GuidedBackprop => "guided-backprop",
            Method::GuidedGradcam => "guided-gradcam",
            Method::Saliency => "saliency",
            Method::Deconvnet => "deconvnet",
            Method::Occlusion => "occlusion",
            Method::IntegratedGradients => "integrated-gradients",
        }
    }

    pub fn kind(self) -> MapKind {
        match self {
            Method::GuidedBackprop
            | Method::GuidedGradcam
            | Method::Saliency
            | Method::Deconvnet
            | Method::IntegratedGradients => MapKind::Gradient,
            Method::Occlusion => MapKind::Signed,
            _ => MapKind::Cam,
        }
    }

    /// The fused CAM step's combine, for the methods it computes from A and g directly.
    pub fn combine(self) -> Option<CamCombine> {
        Some(match self {
            Method::Gradcam | Method::GuidedGradcam => CamCombine::Mean,
            Method::Hirescam => CamCombine::HiRes,
            Method::GradcamElementwise => CamCombine::ElementWise,
            Method::GradcamPlusPlus => CamCombine::PlusPlus,
            Method::Xgradcam => CamCombine::XGrad,
            Method::Layercam => CamCombine::Layer,
            Method::Fem => CamCombine::Fem,
            _ => return None,
        })
    }

    /// A CAM of target layers (`--layer`).
    pub fn uses_layer(self) -> bool {
        self.kind() == MapKind::Cam && self != Method::Fullgrad || self == Method::GuidedGradcam
    }

    /// Needs the gradient at the target layers.
    pub fn layer_gradient(self) -> bool {
        matches!(self, Method::Eigengradcam) || (self.combine().is_some() && self != Method::Fem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::named::Named;

    #[test]
    fn every_name_parses_back_to_its_method() {
        for &m in Method::ALL {
            assert_eq!(Method::parse(m.name()).unwrap(), m);
            assert!(!m.about().is_empty(), "{m:?} has no description");
        }
        assert!(Method::parse("gradcam+").is_err());
    }
}
