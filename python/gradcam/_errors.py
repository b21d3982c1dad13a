"""The package's exceptions. Each is a `gradcam.Error` and also the built-in exception a
caller would catch for its kind (a bad input is a ValueError, a backend failure a RuntimeError).
Kept free of the native module so that the exporter and the native module can both raise them."""


class Error(Exception):
    """Base class of every error gradcam raises (besides FileNotFoundError and OSError for files
    that cannot be read)."""


class InputError(Error, ValueError):
    """The input cannot be explained: its shape, dtype or values, an image that cannot be decoded,
    a class out of range, or an image whose result is not finite."""


class ModelError(Error, ValueError):
    """The weights file (or exported model) is invalid: not safetensors, a tensor missing or of
    the wrong shape, a non-finite weight, an architecture that cannot be recognised."""


class OptionError(Error, ValueError):
    """An unknown method, layer, backend or option, or a combination that does not apply."""


class BackendError(Error, RuntimeError):
    """The backend is not available or failed (no GPU, out of device memory, an internal error)."""
