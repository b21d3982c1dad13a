//! Kernel argument structs. Every kernel of `kernels/*.cu` takes its buffers as pointers and
//! all of its scalars as one struct passed by value, declared twice: in C in the kernel's .cu
//! file, and in Rust by `kernel_args!`, which also lists its fields (name and C type, in
//! order) so the Rust side cannot drift from the list. The test below parses every struct a
//! kernel takes out of the .cu source and compares it with that list, and checks that the
//! Rust struct has no padding; C lays out the same field types in the same order identically.
//! tests/cuda_kernels.rs checks it once more in the PTX that NVRTC makes: each kernel's last
//! parameter has the size and alignment of the Rust struct its launch passes.
//!
//! Fields are 4 bytes (`int`, `unsigned int`, `float`) or 8 (`long long`, for element counts and
//! offsets past 2^31); the 8-byte ones come first and an explicit `_pad` field rounds the rest
//! up to a multiple of 8, so no struct has padding anywhere.

use std::marker::PhantomData;

/// An argument struct: `#[repr(C)]` plain numbers without padding, as `kernel_args!` makes it.
pub(super) trait KernelArgs: cudarc::driver::DeviceRepr + Copy {
    /// Its fields, for the layout test.
    #[cfg(test)]
    const FIELDS: &'static [Field];
}

/// Defines an argument struct (`#[repr(C)]`, Clone, Copy, Debug, `DeviceRepr`) and, for the
/// layout test, its field list, from one declaration. The C declaration of the same name must
/// list the same fields in the same order (checked by this module's test).
macro_rules! kernel_args {
    ($(#[$attr:meta])* struct $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub(super) struct $name {
            $(pub(super) $field: $ty),*
        }
        // SAFETY: a #[repr(C)] struct of plain numbers, without padding, laid out as the C
        // struct of the same name in kernels/*.cu (both checked by args' test).
        unsafe impl cudarc::driver::DeviceRepr for $name {}
        impl $crate::backend::cuda::args::KernelArgs for $name {
            #[cfg(test)]
            const FIELDS: &'static [$crate::backend::cuda::args::Field] = &[$(
                $crate::backend::cuda::args::Field {
                    name: stringify!($field),
                    c_type: <$ty as $crate::backend::cuda::args::CType>::C,
                    len: <$ty as $crate::backend::cuda::args::CType>::LEN,
                    offset: std::mem::offset_of!($name, $field),
                    size: std::mem::size_of::<$ty>(),
                    nested: <$ty as $crate::backend::cuda::args::CType>::NESTED,
                }
            ),*];
        }
        #[cfg(test)]
        impl $crate::backend::cuda::args::CType for $name {
            const C: &'static str = stringify!($name);
            const NESTED: &'static [$crate::backend::cuda::args::Field] =
                <Self as $crate::backend::cuda::args::KernelArgs>::FIELDS;
        }
    };
}
pub(super) use kernel_args;

/// A kernel of kernels/*.cu by name, typed by its argument struct: `launch!` takes only an `A`
/// for it.
pub(super) struct Kernel<A> {
    pub name: &'static str,
    _args: PhantomData<fn(A)>,
}

impl<A> Clone for Kernel<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for Kernel<A> {}

impl<A: KernelArgs> Kernel<A> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _args: PhantomData,
        }
    }

    /// The arguments of one launch, typed by this kernel.
    pub fn args(&self, a: A) -> A {
        a
    }

    /// Its entry in the backend's kernel table.
    #[cfg(not(test))]
    pub const fn entry(&self) -> Entry {
        Entry {
            name: self.name,
            size: std::mem::size_of::<A>(),
            align: std::mem::align_of::<A>(),
        }
    }
}

/// A kernel with its argument struct's type erased: what the backend looks up when it starts
/// and what the layout tests read. Each family's file lists its own (`kernels!`).
pub(super) struct Entry {
    pub name: &'static str,
    /// Size and alignment of the argument struct, which NVRTC's PTX must give the kernel's
    /// last parameter (checked by tests/cuda_kernels.rs).
    pub size: usize,
    pub align: usize,
    #[cfg(test)]
    pub signature: Signature,
}

/// Declares a family's kernels, each typed by its argument struct, and `KERNELS`, the
/// family's part of the backend's kernel table: `kernels! { FWD: Args = "name_fwd"; }`.
macro_rules! kernels {
    ($($(#[$attr:meta])* $kernel:ident: $args:ty = $name:literal;)*) => {
        $($(#[$attr])* pub(super) const $kernel: $crate::backend::cuda::args::Kernel<$args> =
            $crate::backend::cuda::args::Kernel::new($name);)*
        /// This family's kernels, for the backend's table.
        pub(super) const KERNELS: &[$crate::backend::cuda::args::Entry] = &[$($kernel.entry()),*];
    };
}
pub(super) use kernels;

/// One field of an argument struct as Rust lays it out.
#[cfg(test)]
#[derive(Debug)]
pub(super) struct Field {
    pub name: &'static str,
    /// The C type, for an array its element's (`int` for `int v[4]`).
    pub c_type: &'static str,
    /// Elements of an array field; 1 for a scalar.
    pub len: usize,
    pub offset: usize,
    pub size: usize,
    /// The fields of a nested argument struct (`Dims4`); empty for a number.
    pub nested: &'static [Field],
}

/// A type a field may have, with its C name.
#[cfg(test)]
pub(super) trait CType {
    const C: &'static str;
    const LEN: usize = 1;
    const NESTED: &'static [Field] = &[];
}

#[cfg(test)]
mod c_types {
    use super::{CType, Field};
    impl CType for i32 {
        const C: &'static str = "int";
    }
    impl CType for u32 {
        const C: &'static str = "unsigned int";
    }
    impl CType for f32 {
        const C: &'static str = "float";
    }
    impl CType for i64 {
        const C: &'static str = "long long";
    }
    impl<T: CType, const N: usize> CType for [T; N] {
        const C: &'static str = T::C;
        const LEN: usize = N;
        const NESTED: &'static [Field] = T::NESTED;
    }
}

/// What the layout test needs of a kernel: its name, its argument struct's name and fields.
#[cfg(test)]
#[derive(Debug)]
pub(super) struct Signature {
    pub kernel: &'static str,
    pub args: &'static str,
    pub fields: &'static [Field],
    pub size: usize,
}

#[cfg(test)]
impl<A: KernelArgs + CType> Kernel<A> {
    pub const fn entry(&self) -> Entry {
        Entry {
            name: self.name,
            size: std::mem::size_of::<A>(),
            align: std::mem::align_of::<A>(),
            signature: self.signature(),
        }
    }

    pub const fn signature(&self) -> Signature {
        Signature {
            kernel: self.name,
            args: A::C,
            fields: A::FIELDS,
            size: std::mem::size_of::<A>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{kernel_table, kernels::SOURCES};
    use super::Field;

    /// The source with its `//` and `/* */` comments removed.
    fn strip_comments(src: &str) -> String {
        let mut out = String::new();
        let mut rest = src;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("//") {
                rest = r.find('\n').map_or("", |i| &r[i..]);
            } else if let Some(r) = rest.strip_prefix("/*") {
                rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            } else {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// The file whose kernel `name` is, and its parameters as written.
    fn kernel_params<'a>(sources: &'a [(&str, String)], name: &str) -> (&'a str, Vec<String>) {
        let mut found = vec![];
        for (file, src) in sources {
            for (at, _) in src.match_indices("__global__") {
                let decl = &src[at..];
                let open = decl.find('(').unwrap();
                let mut head = decl[..open].trim_end();
                // `__launch_bounds__(n)` comes before the name.
                let decl = if head.ends_with("__launch_bounds__") {
                    let close = open + decl[open..].find(')').unwrap();
                    let rest = &decl[close + 1..];
                    let open = rest.find('(').unwrap();
                    head = rest[..open].trim_end();
                    &rest[open..]
                } else {
                    &decl[open..]
                };
                if head.split_whitespace().last() != Some(name) {
                    continue;
                }
                let close = decl.find(')').unwrap();
                let params = decl[1..close]
                    .split(',')
                    .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect();
                found.push((*file, params));
            }
        }
        assert_eq!(
            found.len(),
            1,
            "kernel {name}: defined {} times",
            found.len()
        );
        found.pop().unwrap()
    }

    /// The fields of `struct name { ... };` in src: (name, C type, array length).
    fn c_struct(src: &str, name: &str) -> Vec<(String, String, usize)> {
        let open = format!("struct {name} {{");
        let starts: Vec<_> = src.match_indices(&open).collect();
        assert_eq!(
            starts.len(),
            1,
            "struct {name}: declared {} times",
            starts.len()
        );
        let body = &src[starts[0].0 + open.len()..];
        let body = &body[..body.find("};").expect("struct closed by `};`")];
        let mut fields = vec![];
        for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            assert!(
                !decl.contains(['(', ')', '{', '}', '=', '*']),
                "struct {name}: `{decl}` is not a plain field"
            );
            let mut parts = decl.split(',').map(str::trim);
            let first: Vec<&str> = parts.next().unwrap().split_whitespace().collect();
            let (ty, first_name) = first.split_at(first.len() - 1);
            let ty = match ty.join(" ").as_str() {
                "unsigned" => "unsigned int".to_string(),
                t => t.to_string(),
            };
            for declarator in first_name.iter().copied().chain(parts) {
                let (field, len) = match declarator.split_once('[') {
                    Some((f, n)) => (f, n.trim_end_matches(']').parse().unwrap()),
                    None => (declarator, 1),
                };
                fields.push((field.to_string(), ty.clone(), len));
            }
        }
        fields
    }

    /// Checks `fields` (Rust) against `struct name` of src, nested structs included, and that
    /// the Rust layout has no padding.
    fn check_struct(file: &str, src: &str, name: &str, fields: &[Field], size: usize) {
        let c = c_struct(src, name);
        let rust: Vec<_> = fields
            .iter()
            .map(|f| (f.name.to_string(), f.c_type.to_string(), f.len))
            .collect();
        assert_eq!(
            rust, c,
            "struct {name}: Rust (left) and {file} (right) differ"
        );
        let mut end = 0;
        for f in fields {
            assert_eq!(f.offset, end, "struct {name}: padding before {}", f.name);
            end += f.size;
            if !f.nested.is_empty() {
                check_struct(file, src, f.c_type, f.nested, f.size / f.len);
            }
        }
        assert_eq!(size, end, "struct {name}: padding at the end");
    }

    #[test]
    fn argument_structs_match_their_c_declarations() {
        let sources: Vec<(&str, String)> = SOURCES
            .iter()
            .map(|(f, s)| (*f, strip_comments(s)))
            .collect();
        for s in kernel_table().map(|e| &e.signature) {
            let (file, params) = kernel_params(&sources, s.kernel);
            // Pointers first, then the one struct of scalars.
            let (last, pointers) = params.split_last().unwrap();
            for p in pointers {
                assert!(
                    p.contains('*'),
                    "{}: `{p}` is a scalar outside the struct",
                    s.kernel
                );
            }
            let words: Vec<&str> = last.split_whitespace().collect();
            assert!(
                words.len() == 2 && words[0] == s.args,
                "{}: takes `{last}` last; the launch passes a {}",
                s.kernel,
                s.args
            );
            let src = &sources.iter().find(|(f, _)| *f == file).unwrap().1;
            check_struct(file, src, s.args, s.fields, s.size);
        }
    }

    #[test]
    fn the_parser_reads_what_the_test_relies_on() {
        let src = "struct A {\n  long long len;\n  int n, c_in;  \n unsigned act; int v[4];\n};";
        let f = c_struct(&strip_comments(src), "A");
        let want = [
            ("len", "long long", 1),
            ("n", "int", 1),
            ("c_in", "int", 1),
            ("act", "unsigned int", 1),
            ("v", "int", 4),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, t, l)| (n.to_string(), t.to_string(), *l))
            .collect();
        assert_eq!(f, want);
        let srcs = [(
            "k.cu",
            strip_comments(
                "// not_me(int x)\nextern \"C\" __global__ void __launch_bounds__(256) k(float* y,\n const float* __restrict__ x, A a) {}",
            ),
        )];
        let (file, params) = kernel_params(&srcs, "k");
        assert_eq!(file, "k.cu");
        assert_eq!(params, ["float* y", "const float* __restrict__ x", "A a"]);
    }
}
