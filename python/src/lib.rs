//! The native half of the `gradcam` Python package: the library's [`gradcam::Explainer`],
//! model loading and inspection, numpy arrays in and out. `python/gradcam/__init__.py` is the
//! API users see; this module is `gradcam._native`.
//!
//! Compute runs with the GIL released: the explainer's worker thread does the work while the
//! calling thread waits in [`Python::detach`], so other Python threads run meanwhile.

use gradcam::image::{self, Prepared, Resize, Transform};
use gradcam::{
    BackendKind, Error, Explainer as Inner, Explanation, LoadOptions, Method, MethodOptions, Model,
    Named, Score, Targets, Tensor,
};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Inputs numpy had to convert (another dtype, or not C-contiguous) since the module loaded:
/// the tests check that a C-contiguous float32 array is read in place.
static CONVERSIONS: AtomicUsize = AtomicUsize::new(0);

/// A library error as the Python exception for it: missing files as `FileNotFoundError`,
/// the rest as the `gradcam.Error` subclass for its kind (python/gradcam/_errors.py), with the
/// library's message.
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let class = match &e {
        Error::Io { source, .. } | Error::Write { source, .. } => {
            return match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
                _ => PyOSError::new_err(msg),
            }
        }
        Error::Safetensors { .. }
        | Error::Dtype { .. }
        | Error::IntegerTensor { .. }
        | Error::NonFinite { .. }
        | Error::MissingTensor { .. }
        | Error::UnexpectedTensor { .. }
        | Error::Shape { .. }
        | Error::UnknownArch { .. }
        | Error::Graph { .. } => "ModelError",
        Error::Input { .. } | Error::ClassOutOfRange { .. } | Error::InputShape { .. } => {
            "InputError"
        }
        Error::UnknownLayer { .. }
        | Error::NotSpatial { .. }
        | Error::Usage(_)
        | Error::BadOption(_) => "OptionError",
        Error::Backend { .. } | Error::Interrupted(_) => "BackendError",
    };
    error(py, class, msg)
}

/// An exception of class `class` of gradcam._errors.
fn error(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py
        .import("gradcam._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((msg,)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

fn option_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    error(py, "OptionError", msg.into())
}

fn input_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    error(py, "InputError", msg.into())
}

/// `weights`: a path (str or os.PathLike) or the bytes of a whole safetensors file.
fn load_model(
    py: Python<'_>,
    weights: &Bound<'_, PyAny>,
    name: Option<String>,
    arch: Option<String>,
    transform_input: Option<bool>,
) -> PyResult<Model> {
    let opts = LoadOptions {
        arch,
        transform_input,
    };
    if let Ok(bytes) = weights.cast::<PyBytes>() {
        let bytes = bytes.as_bytes();
        let name = name.unwrap_or_else(|| "<bytes>".into());
        return py
            .detach(|| Model::from_bytes(bytes, &name, &opts))
            .map_err(|e| to_py(py, e));
    }
    let path: PathBuf = weights.extract().map_err(|_| {
        option_error(
            py,
            format!(
                "weights must be a path (str or os.PathLike) or the bytes of a safetensors file, \
                 not {}",
                type_name(weights)
            ),
        )
    })?;
    py.detach(|| Model::load_with(&path, &opts))
        .map_err(|e| to_py(py, e))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The option names `Explainer(**options)` takes, each with its parser into MethodOptions.
const OPTIONS: &[&str] = &[
    "score",
    "aug_smooth",
    "eigen_smooth",
    "batch_size",
    "patch",
    "stride",
    "fill",
    "steps",
    "smooth",
    "noise",
    "seed",
];

fn method_options(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<MethodOptions> {
    let mut o = MethodOptions::default();
    let Some(options) = options else {
        return Ok(o);
    };
    for (k, v) in options.iter() {
        let key: String = k.extract()?;
        let bad =
            |what: &str| option_error(py, format!("`{key}` must be {what}, not {}", type_name(&v)));
        let count = |max: usize| -> PyResult<usize> {
            let n: i64 = if v.is_instance_of::<pyo3::types::PyBool>() {
                return Err(bad("an integer"));
            } else {
                v.extract().map_err(|_| bad("an integer"))?
            };
            usize::try_from(n)
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| option_error(py, format!("`{key}` must be in 0..={max}, not {n}")))
        };
        let flag = || -> PyResult<bool> {
            v.cast::<pyo3::types::PyBool>()
                .map(|b| b.is_true())
                .map_err(|_| bad("True or False"))
        };
        let real = || -> PyResult<f32> {
            let x: f64 = v.extract().map_err(|_| bad("a number"))?;
            if x.is_finite() && x.abs() <= f32::MAX as f64 {
                Ok(x as f32)
            } else {
                Err(option_error(py, format!("`{key}` must be finite, not {x}")))
            }
        };
        match key.as_str() {
            "score" => {
                let s: String = v.extract().map_err(|_| bad("a string"))?;
                o.score = Score::parse(&s).map_err(|e| to_py(py, e))?;
            }
            "aug_smooth" => o.aug_smooth = flag()?,
            "eigen_smooth" => o.eigen_smooth = flag()?,
            // The command line's bounds (src/cli): larger values only exhaust memory.
            "batch_size" => o.batch_size = count(65536)?,
            "patch" => o.patch = count(1 << 20)?,
            "stride" => o.stride = count(1 << 20)?,
            "steps" => o.steps = count(4096)?,
            "smooth" => o.smooth = count(65536)?,
            "fill" => o.fill = real()?,
            "noise" => o.noise = real()?,
            "seed" => {
                o.seed = v
                    .extract::<u64>()
                    .map_err(|_| bad("a non-negative integer below 2**64"))?
            }
            _ => {
                return Err(option_error(
                    py,
                    format!(
                        "unknown option `{key}`; the options are: {}",
                        OPTIONS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(o)
}

fn names<T: Named>(py: Python<'_>, v: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<T>> {
    strings(py, v, what)?
        .iter()
        .map(|s| T::parse(s).map_err(|e| to_py(py, e)))
        .collect()
}

/// A str, or a list or tuple of str.
fn strings(py: Python<'_>, v: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(vec![s.to_string()]);
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<pyo3::types::PyTuple>() {
        if let Ok(list) = v.extract::<Vec<String>>() {
            return Ok(list);
        }
    }
    Err(option_error(
        py,
        format!(
            "`{what}` must be a str or a list of str, not {}",
            type_name(v)
        ),
    ))
}

/// A model on a backend with its methods and layers (gradcam.Explainer wraps it).
#[pyclass(frozen, module = "gradcam._native")]
struct Explainer {
    inner: Inner,
    transform: Transform,
}

#[pymethods]
impl Explainer {
    #[new]
    #[pyo3(signature = (weights, layers=None, methods=None, backend="auto", options=None, threads=None, arch=None, transform_input=None, name=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        weights: &Bound<'_, PyAny>,
        layers: Option<&Bound<'_, PyAny>>,
        methods: Option<&Bound<'_, PyAny>>,
        backend: &str,
        options: Option<&Bound<'_, PyDict>>,
        threads: Option<i64>,
        arch: Option<String>,
        transform_input: Option<bool>,
        name: Option<String>,
    ) -> PyResult<Self> {
        let backend = BackendKind::parse(backend).map_err(|e| to_py(py, e))?;
        let methods = match methods {
            Some(m) => names::<Method>(py, m, "method")?,
            None => vec![Method::Gradcam],
        };
        let layers = match layers {
            Some(l) if !l.is_none() => strings(py, l, "layer")?,
            _ => vec![],
        };
        let options = method_options(py, options)?;
        let threads = match threads {
            None => None,
            Some(n) if (1..=4096).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(option_error(
                    py,
                    format!("`threads` must be in 1..=4096, not {n}"),
                ))
            }
        };
        let model = load_model(py, weights, name, arch, transform_input)?;
        let transform = model.preprocessing();
        let mut b = Explainer::builder_for(model)
            .backend(backend)
            .methods(&methods)
            .layers(layers)
            .options(options);
        if let Some(n) = threads {
            b = b.threads(n);
        }
        let inner = py.detach(|| b.build()).map_err(|e| to_py(py, e))?;
        Ok(Explainer { inner, transform })
    }

    /// Explains `x` [N, C, H, W]; returns a dict of numpy arrays (see gradcam.Explanation).
    #[pyo3(signature = (x, targets=None))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        targets: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let x = input_tensor(py, x)?;
        let targets = targets_of(py, targets, x.shape[0])?;
        let e = py
            .detach(|| self.inner.explain_owned(x, targets))
            .map_err(|e| to_py(py, e))?;
        explanation(py, e, None)
    }

    /// Decodes and preprocesses the image files with the model's preprocessing (as the command
    /// line does), then explains them. A file that cannot be read or decoded fails its row only.
    #[pyo3(signature = (paths, targets=None))]
    fn explain_images<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        targets: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let transform = &self.transform;
        self.explain_sources(py, paths.len(), targets, || {
            paths
                .par_iter()
                .map(|p| image::prepare(p, transform).map_err(|e| e.to_string()))
                .collect()
        })
    }

    /// [`Explainer::explain_images`] of encoded images in memory; `names` stand for them in
    /// the failures.
    #[pyo3(signature = (blobs, names, targets=None))]
    fn explain_encoded<'py>(
        &self,
        py: Python<'py>,
        blobs: Vec<Bound<'py, PyBytes>>,
        names: Vec<String>,
        targets: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if names.len() != blobs.len() {
            return Err(input_error(
                py,
                format!("{} names for {} images", names.len(), blobs.len()),
            ));
        }
        let blobs: Vec<&[u8]> = blobs.iter().map(|b| b.as_bytes()).collect();
        let transform = &self.transform;
        self.explain_sources(py, blobs.len(), targets, || {
            blobs
                .par_iter()
                .zip(&names)
                .map(|(b, name)| {
                    image::prepare_bytes(b, name, transform).map_err(|e| e.to_string())
                })
                .collect()
        })
    }

    /// The model's preprocessing as a dict: resize, crop, interpolation, mean, std.
    #[getter]
    fn preprocessing<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        transform_dict(py, &self.transform)
    }

    /// The network input's (height, width) the preprocessing gives.
    #[getter]
    fn input_size(&self) -> Option<(usize, usize)> {
        self.transform.input_size()
    }

    #[getter]
    fn backend(&self) -> String {
        self.inner.backend_name().to_owned()
    }

    #[getter]
    fn methods(&self) -> Vec<&'static str> {
        self.inner.methods().iter().map(|m| m.name()).collect()
    }

    #[getter]
    fn layers(&self) -> Vec<String> {
        self.inner.layers().to_vec()
    }

    #[getter]
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
}

impl Explainer {
    fn builder_for(model: Model) -> gradcam::ExplainerBuilder {
        Inner::builder(model)
    }

    /// Decodes `n` images with `prepare` (the GIL released), then explains those that could be.
    fn explain_sources<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        targets: Option<&Bound<'py, PyAny>>,
        prepare: impl FnOnce() -> Vec<Result<Prepared, String>> + Send,
    ) -> PyResult<Bound<'py, PyDict>> {
        if n == 0 {
            return Err(input_error(py, "no images given"));
        }
        let targets = targets_of(py, targets, n)?;
        let size = self.transform.input_size();
        let (e, rgb) = py
            .detach(|| explain_prepared(&self.inner, prepare(), size, targets))
            .map_err(|e| to_py(py, e))?;
        explanation(py, e, Some(rgb))
    }
}

/// `x` as the request's tensor: a C-contiguous float32 array is read in place and copied
/// once, into the tensor the explainer's worker owns; any other float array is first
/// converted by numpy (`np.ascontiguousarray(x, dtype=np.float32)`, counted in CONVERSIONS);
/// an object with `__array__` (a CPU torch tensor) is viewed through `np.asarray` first.
fn input_tensor(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let np = py.import("numpy")?;
    let arr = match x.cast::<PyArrayDyn<f32>>() {
        Ok(a) if a.is_c_contiguous() => a.clone(),
        _ => {
            // Another array type (a CPU torch tensor, …) through numpy's array protocol.
            let x = if x.is_instance_of::<numpy::PyUntypedArray>() || !x.hasattr("__array__")? {
                x.clone()
            } else {
                np.call_method1("asarray", (x,)).map_err(|e| {
                    input_error(py, format!("x cannot be read as a numpy array: {e}"))
                })?
            };
            if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
                if a.is_c_contiguous() {
                    return tensor_of(py, a);
                }
            }
            let Ok(dtype) = x.cast::<numpy::PyUntypedArray>().map(|a| a.dtype()) else {
                return Err(input_error(
                    py,
                    format!(
                        "x must be a numpy array of float32 [N, 3, H, W], not {}",
                        type_name(&x)
                    ),
                ));
            };
            let kind: String = dtype.getattr("kind")?.extract()?;
            if kind != "f" {
                return Err(input_error(
                    py,
                    format!(
                        "x must be a float array (float32, preprocessed), not {}; decode and \
                         preprocess images first (explain_images does both)",
                        dtype.str()?
                    ),
                ));
            }
            CONVERSIONS.fetch_add(1, Ordering::Relaxed);
            np.call_method1("ascontiguousarray", (x, np.getattr("float32")?))?
                .cast_into::<PyArrayDyn<f32>>()
                .map_err(PyErr::from)?
        }
    };
    tensor_of(py, &arr)
}

/// The request's tensor: one copy of a C-contiguous float32 array.
fn tensor_of(py: Python<'_>, arr: &Bound<'_, PyArrayDyn<f32>>) -> PyResult<Tensor> {
    let shape = arr.shape().to_vec();
    if shape.len() != 4 {
        return Err(to_py(
            py,
            Error::InputShape {
                input: shape.clone(),
                reason: format!("expected [N, C, H, W] (rank 4), got rank {}", shape.len()),
            },
        ));
    }
    let ro = arr
        .try_readonly()
        .map_err(|e| input_error(py, format!("x cannot be read: {e}")))?;
    let data = ro
        .as_slice()
        .map_err(|e| input_error(py, e.to_string()))?
        .to_vec();
    Ok(Tensor::new(shape, data))
}

/// None: each image's top class; an int: that class for all; a sequence: one per image.
fn targets_of(py: Python<'_>, t: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Targets> {
    let Some(t) = t.filter(|t| !t.is_none()) else {
        return Ok(Targets::Top);
    };
    let class =
        |c: i64| usize::try_from(c).map_err(|_| input_error(py, format!("class {c} is negative")));
    if t.is_instance_of::<pyo3::types::PyBool>() {
        return Err(input_error(
            py,
            "targets must be None, an int or a sequence of ints, not bool",
        ));
    }
    if let Ok(c) = t.extract::<i64>() {
        return Ok(Targets::Class(class(c)?));
    }
    let cs: Vec<i64> = t.extract().map_err(|_| {
        input_error(
            py,
            format!(
                "targets must be None, an int or a sequence of ints, not {}",
                type_name(t)
            ),
        )
    })?;
    if cs.len() != n {
        return Err(input_error(
            py,
            format!("{} targets for {n} images", cs.len()),
        ));
    }
    Ok(Targets::PerImage(
        cs.into_iter().map(class).collect::<PyResult<_>>()?,
    ))
}

/// Explains the images that were prepared; the others get a failure and NaN rows. Returns the
/// explanation in the order of `prepared` and each image's network view (RGB, H×W×3; empty
/// for a failed image).
fn explain_prepared(
    inner: &Inner,
    prepared: Vec<Result<Prepared, String>>,
    size: Option<(usize, usize)>,
    targets: Targets,
) -> gradcam::Result<(Explanation, Vec<Vec<u8>>)> {
    let n = prepared.len();
    let good: Vec<usize> = (0..n).filter(|&i| prepared[i].is_ok()).collect();
    let failures: Vec<Option<String>> =
        prepared.iter().map(|p| p.as_ref().err().cloned()).collect();
    let Some(&first) = good.first() else {
        // No image to run: one of zeros gives the maps' shapes, then every row is withheld.
        let (h, w) = size.ok_or_else(|| Error::BadOption("no image could be read".into()))?;
        let e = inner.explain_owned(
            Tensor::new(vec![1, 3, h, w], vec![0.0; 3 * h * w]),
            Targets::Top,
        )?;
        return Ok((e.scatter(&[], failures), vec![Vec::new(); n]));
    };
    let (h, w) = prepared[first].as_ref().expect("good").geometry.input;
    let mut data = Vec::with_capacity(good.len() * 3 * h * w);
    for &i in &good {
        data.extend_from_slice(&prepared[i].as_ref().expect("good").tensor);
    }
    let sub_targets = match &targets {
        Targets::PerImage(cs) => Targets::PerImage(good.iter().map(|&i| cs[i]).collect()),
        t => t.clone(),
    };
    let e = inner.explain_owned(Tensor::new(vec![good.len(), 3, h, w], data), sub_targets)?;
    let rgb = prepared
        .into_iter()
        .map(|p| p.map(|p| p.rgb.into_raw()).unwrap_or_default())
        .collect();
    Ok((e.scatter(&good, failures), rgb))
}

fn array<'py, T: numpy::Element>(
    py: Python<'py>,
    shape: &[usize],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| PyErr::new::<pyo3::exceptions::PyRuntimeError, _>(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

/// The explanation as a dict of numpy arrays (moved, not copied, into numpy).
fn explanation<'py>(
    py: Python<'py>,
    e: Explanation,
    rgb: Option<Vec<Vec<u8>>>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let n = e.classes.len();
    d.set_item("logits", array(py, &e.logits.shape, e.logits.data)?)?;
    let classes: Vec<i64> = e.classes.iter().map(|&c| c as i64).collect();
    d.set_item("classes", array(py, &[n], classes)?)?;
    d.set_item("probabilities", array(py, &[n], e.probabilities)?)?;
    let maps = PyList::empty(py);
    for m in e.maps {
        let kind = kind_name(m.kind);
        maps.append((
            m.method.name(),
            kind,
            array(py, &m.data.shape, m.data.data)?,
        ))?;
    }
    d.set_item("maps", maps)?;
    d.set_item("failures", e.failures)?;
    if let Some(rgb) = rgb {
        d.set_item(
            "rgb",
            rgb.into_iter()
                .map(|v| PyBytes::new(py, &v))
                .collect::<Vec<_>>(),
        )?;
    }
    Ok(d)
}

fn transform_dict<'py>(py: Python<'py>, t: &Transform) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match t.resize {
        Resize::Shorter(n) => d.set_item("resize", n)?,
        Resize::Exact(h, w) => d.set_item("resize", (h, w))?,
    }
    d.set_item("crop", t.crop)?;
    d.set_item("interpolation", t.filter.name())?;
    d.set_item("mean", t.mean.to_vec())?;
    d.set_item("std", t.std.to_vec())?;
    Ok(d)
}

/// What `gradcam inspect` prints, as a dict.
#[pyfunction]
#[pyo3(signature = (weights, arch=None, transform_input=None, name=None, size=None))]
fn inspect<'py>(
    py: Python<'py>,
    weights: &Bound<'py, PyAny>,
    arch: Option<String>,
    transform_input: Option<bool>,
    name: Option<String>,
    size: Option<(usize, usize)>,
) -> PyResult<Bound<'py, PyDict>> {
    let model = load_model(py, weights, name, arch, transform_input)?;
    if let Some((h, w)) = size {
        if h == 0 || w == 0 || h > 1 << 16 || w > 1 << 16 {
            return Err(input_error(
                py,
                format!("size ({h}, {w}) must be in 1..=65536 on each side"),
            ));
        }
    }
    let layers = py.detach(|| model.layers(size)).map_err(|e| to_py(py, e))?;
    let d = PyDict::new(py);
    d.set_item("arch", &model.arch)?;
    d.set_item("family", model.family)?;
    d.set_item("graph", model.embedded.as_deref().unwrap_or("built-in"))?;
    d.set_item("num_classes", model.num_classes)?;
    let (h, w) = size.unwrap_or(model.input_size());
    d.set_item("input", (model.graph.in_channels, h, w))?;
    d.set_item("preprocessing", transform_dict(py, &model.preprocessing())?)?;
    d.set_item("transform_input", model.transform_input)?;
    d.set_item("default_layer", &model.default_layer)?;
    let list = PyList::empty(py);
    for l in layers {
        let item = PyDict::new(py);
        item.set_item("name", l.name)?;
        item.set_item("kind", l.kind)?;
        item.set_item("shape", l.shape)?;
        list.append(item)?;
    }
    d.set_item("layers", list)?;
    Ok(d)
}

/// What a method's map is, as `gradcam.METHODS` and the explanations name it.
fn kind_name(kind: gradcam::MapKind) -> &'static str {
    match kind {
        gradcam::MapKind::Cam => "cam",
        gradcam::MapKind::Gradient => "gradient",
        gradcam::MapKind::Signed => "signed",
    }
}

/// Every method name, in the order the command line lists them.
#[pyfunction]
fn methods() -> Vec<(&'static str, &'static str, &'static str)> {
    Method::ALL
        .iter()
        .map(|m| (m.name(), kind_name(m.kind()), Named::about(*m)))
        .collect()
}

/// `gradcam.heatmap`: an (H, W) CAM as the (H, W, 3) JET heatmap.
#[pyfunction]
fn heatmap<'py>(
    py: Python<'py>,
    cam: numpy::PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let (h, w) = (cam.shape()[0], cam.shape()[1]);
    let data = cam.as_slice().map_err(|e| input_error(py, e.to_string()))?;
    let img = image::heatmap(data, h, w).map_err(|e| to_py(py, e))?;
    array(py, &[h, w, 3], img.into_raw())
}

/// `gradcam.overlay`: pytorch-grad-cam's show_cam_on_image on an (H, W, 3) uint8 RGB image.
#[pyfunction]
fn overlay<'py>(
    py: Python<'py>,
    rgb: numpy::PyReadonlyArray3<'py, u8>,
    cam: numpy::PyReadonlyArray2<'py, f32>,
    image_weight: f64,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let s = rgb.shape();
    let (h, w) = (s[0], s[1]);
    if s[2] != 3 {
        return Err(input_error(
            py,
            format!("the image must be (H, W, 3) RGB, not {s:?}"),
        ));
    }
    let pixels = rgb
        .as_slice()
        .map_err(|e| input_error(py, e.to_string()))?
        .to_vec();
    let img = image::RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| input_error(py, format!("an image of shape {s:?} is too large")))?;
    let cam = cam.as_slice().map_err(|e| input_error(py, e.to_string()))?;
    let out = image::overlay(&img, cam, image_weight).map_err(|e| to_py(py, e))?;
    array(py, &[h, w, 3], out.into_raw())
}

/// `gradcam._native.digest`: a 64-bit digest of an array's bytes, with the GIL released. The
/// drop-in compares it with the one taken at export to notice weights edited in place through
/// `.data` (which leaves the version counter alone); hashing a model's weights once per call
/// must cost little next to the forward pass that reads them anyway, so 1 MiB chunks are hashed
/// in parallel, four independent lanes each (memory-bound: vgg16's 553 MB in well under a tenth
/// of a second on 2 cores, against 0.26 s for zlib's CRC-32). Not cryptographic.
#[pyfunction]
fn digest(py: Python<'_>, data: numpy::PyReadonlyArray1<'_, u8>) -> PyResult<u64> {
    let bytes = data
        .as_slice()
        .map_err(|e| input_error(py, e.to_string()))?;
    Ok(py.detach(|| digest_bytes(bytes)))
}

fn digest_bytes(b: &[u8]) -> u64 {
    const CHUNK: usize = 1 << 20;
    let parts: Vec<u64> = b.par_chunks(CHUNK).map(chunk_digest).collect();
    parts
        .iter()
        .fold(mix(b.len() as u64), |h, &p| mix(h.rotate_left(17) ^ p))
}

fn chunk_digest(c: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [K, K ^ 1, K ^ 2, K ^ 3];
    let mut blocks = c.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(31);
        }
    }
    let mut h = lanes.iter().fold(0u64, |h, &l| mix(h ^ l).wrapping_add(l));
    for &x in blocks.remainder() {
        h = (h ^ x as u64).wrapping_mul(K);
    }
    mix(h)
}

/// MurmurHash3's 64-bit finalizer.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// How many inputs numpy converted (another dtype, or not C-contiguous) since import.
#[pyfunction]
fn input_conversions() -> usize {
    CONVERSIONS.load(Ordering::Relaxed)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Explainer>()?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(input_conversions, m)?)?;
    m.add_function(wrap_pyfunction!(heatmap, m)?)?;
    m.add_function(wrap_pyfunction!(digest, m)?)?;
    m.add_function(wrap_pyfunction!(overlay, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
