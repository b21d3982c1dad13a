//! Randomly initialised state dicts with torchvision's tensor names and shapes, so that
//! benchmarks and tests can build any supported architecture without downloading weights.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;

struct Init {
    rng: StdRng,
    tensors: BTreeMap<String, Tensor>,
}

impl Init {
    /// He-normal weights keep activations of a deep ReLU network at a stable scale.
    fn he(&mut self, name: &str, shape: Vec<usize>) {
        let fan_in: usize = shape[1..].iter().product();
        let normal = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).expect("valid std");
        let n = shape.iter().product();
        let data = (0..n).map(|_| normal.sample(&mut self.rng)).collect();
        self.tensors.insert(name.into(), Tensor::new(shape, data));
    }

    fn uniform(&mut self, name: &str, n: usize, lo: f32, hi: f32) {
        let data = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        self.tensors.insert(name.into(), Tensor::new(vec![n], data));
    }

    fn conv(&mut self, name: &str, c_out: usize, c_in: usize, k: usize, bias: bool) {
        self.he(&format!("{name}.weight"), vec![c_out, c_in, k, k]);
        if bias {
            self.uniform(&format!("{name}.bias"), c_out, -0.05, 0.05);
        }
    }

    fn linear(&mut self, name: &str, out_f: usize, in_f: usize) {
        self.he(&format!("{name}.weight"), vec![out_f, in_f]);
        self.uniform(&format!("{name}.bias"), out_f, -0.05, 0.05);
    }

    fn bn(&mut self, name: &str, c: usize) {
        self.uniform(&format!("{name}.weight"), c, 0.5, 1.5);
        self.uniform(&format!("{name}.bias"), c, -0.1, 0.1);
        self.uniform(&format!("{name}.running_mean"), c, -0.1, 0.1);
        self.uniform(&format!("{name}.running_var"), c, 0.5, 1.5);
    }
}

/// The key→shape lists of further torchvision variants (scripts/make_zoo_shapes.py writes
/// them from torchvision's own state dicts).
const LISTED: &str = include_str!("zoo_shapes.tsv");

fn parse_listed() -> impl Iterator<Item = (&'static str, &'static str, Vec<usize>)> {
    LISTED.lines().filter_map(|line| {
        let mut f = line.split('\t');
        let (v, name, dims) = (f.next()?, f.next()?, f.next()?);
        let shape = dims.split(',').filter_map(|d| d.parse().ok()).collect();
        Some((v, name, shape))
    })
}

fn listed(arch: &str) -> Option<Vec<(&'static str, Vec<usize>)>> {
    let t: Vec<_> = parse_listed()
        .filter(|(v, _, _)| *v == arch)
        .map(|(_, n, s)| (n, s))
        .collect();
    (!t.is_empty()).then_some(t)
}

fn listed_variants() -> Vec<&'static str> {
    let mut v: Vec<&str> = parse_listed().map(|(v, _, _)| v).collect();
    v.dedup();
    v
}

/// torchvision's VGG configurations: channel counts, 0 for a max-pool.
fn vgg_cfg(name: &str) -> Option<&'static [usize]> {
    Some(match name {
        "vgg11" => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        "vgg13" => &[
            64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0,
        ],
        "vgg16" => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
        ],
        "vgg19" => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512,
            512, 0,
        ],
        _ => return None,
    })
}

fn resnet_cfg(name: &str) -> Option<(bool, [usize; 4])> {
    Some(match name {
        "resnet18" => (false, [2, 2, 2, 2]),
        "resnet34" => (false, [3, 4, 6, 3]),
        "resnet50" => (true, [3, 4, 6, 3]),
        "resnet101" => (true, [3, 4, 23, 3]),
        "resnet152" => (true, [3, 8, 36, 3]),
        _ => return None,
    })
}

/// A random state dict for `arch` (one of `arch::known()`) with `classes` outputs.
pub fn random_state_dict(
    arch: &str,
    classes: usize,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    let mut w = Init {
        rng: StdRng::seed_from_u64(seed),
        tensors: BTreeMap::new(),
    };
    if arch == "seed-cnn" {
        w.conv("conv1", 64, 3, 5, true);
        w.conv("conv2", 32, 64, 5, true);
        w.conv("conv3", 16, 32, 5, true);
        w.linear("fc1", 2000, 16);
        w.linear("fc2", classes, 2000);
    } else if let Some(cfg) = vgg_cfg(arch.trim_end_matches("_bn")) {
        let bn = arch.ends_with("_bn");
        let (mut i, mut c) = (0, 3);
        for &v in cfg {
            if v == 0 {
                i += 1;
                continue;
            }
            w.conv(&format!("features.{i}"), v, c, 3, true);
            if bn {
                w.bn(&format!("features.{}", i + 1), v);
            }
            i += if bn { 3 } else { 2 };
            c = v;
        }
        w.linear("classifier.0", 4096, 512 * 49);
        w.linear("classifier.3", 4096, 4096);
        w.linear("classifier.6", classes, 4096);
    } else if let Some((bottleneck, depths)) = resnet_cfg(arch) {
        let expansion = if bottleneck { 4 } else { 1 };
        w.conv("conv1", 64, 3, 7, false);
        w.bn("bn1", 64);
        let mut c = 64;
        for (l, &depth) in depths.iter().enumerate() {
            let planes = 64 << l;
            for i in 0..depth {
                let name = format!("layer{}.{i}", l + 1);
                let stride = if l > 0 && i == 0 { 2 } else { 1 };
                let convs: Vec<(usize, usize, usize)> = if bottleneck {
                    vec![(planes, c, 1), (planes, planes, 3), (planes * 4, planes, 1)]
                } else {
                    vec![(planes, c, 3), (planes, planes, 3)]
                };
                for (j, (co, ci, k)) in convs.into_iter().enumerate() {
                    w.conv(&format!("{name}.conv{}", j + 1), co, ci, k, false);
                    w.bn(&format!("{name}.bn{}", j + 1), co);
                }
                if stride != 1 || c != planes * expansion {
                    w.conv(
                        &format!("{name}.downsample.0"),
                        planes * expansion,
                        c,
                        1,
                        false,
                    );
                    w.bn(&format!("{name}.downsample.1"), planes * expansion);
                }
                c = planes * expansion;
            }
        }
        w.linear("fc", classes, c);
    } else if let Some(tensors) = listed(arch) {
        if classes != 1000 {
            return Err(Error::Usage(format!(
                "random weights of {arch} have torchvision's 1000 classes (got `classes={classes}`)"
            )));
        }
        for (name, shape) in tensors {
            let n = shape.iter().product();
            match name.rsplit('.').next().unwrap_or("") {
                "running_var" | "weight" if shape.len() == 1 => w.uniform(name, n, 0.5, 1.5),
                "running_mean" | "bias" => w.uniform(name, n, -0.05, 0.05),
                "layer_scale" => w.uniform(name, n, 0.5, 1.5),
                _ => w.he(name, shape.clone()),
            }
            if name.ends_with("layer_scale") {
                w.tensors.get_mut(name).expect("just inserted").shape = shape;
            }
        }
    } else if super::arch::family_of(arch).is_none() {
        return Err(Error::Usage(format!(
            "unknown architecture '{arch}'; known: {}",
            super::arch::known().join(", ")
        )));
    } else {
        return Err(Error::Usage(format!(
            "no random weights for '{arch}': benchmark it with `weights` (random weights exist for seed-cnn, vgg*, resnet* and {})",
            listed_variants().join(", ")
        )));
    }
    Ok(w.tensors)
}
