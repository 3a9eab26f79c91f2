//! Choosing where the model runs: the CPU, or a GPU when this build has
//! the `cuda` or `metal` feature and the machine has the device.

use candle_core::Device;

use crate::error::{Error, Result};

/// The names [`by_name`] accepts.
pub const DEVICE_NAMES: &str = "auto, cpu, cuda, cuda:N, metal, metal:N";

/// The device called `name`: `cpu`; `cuda` or `cuda:N` (the Nth GPU);
/// `metal` or `metal:N`; or `auto`, the first CUDA or Metal GPU when this
/// build supports one and the machine has it, else the CPU.
///
/// Asking for a kind of GPU this build was compiled without, or that the
/// machine does not have, is an error that says which.
///
/// ```
/// let device = abridge::device::by_name("cpu")?;
/// assert!(device.is_cpu());
/// assert!(abridge::device::by_name("tpu").is_err());
/// # Ok::<(), abridge::Error>(())
/// ```
pub fn by_name(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let (kind, index) = match name.split_once(':') {
        Some((kind, n)) => {
            let index = n.parse::<usize>().map_err(|_| {
                Error::InvalidOption(format!(
                    "device `{name}`: `{n}` is not a device number (expected {DEVICE_NAMES})"
                ))
            })?;
            (kind, Some(index))
        }
        None => (name.as_str(), None),
    };
    match (kind, index) {
        ("cpu", None) => Ok(Device::Cpu),
        ("auto", None) => Ok(auto()),
        (kind, index) if let Some(&gpu_kind) = GPUS.iter().find(|g| g.0 == kind) => {
            gpu(gpu_kind, index.unwrap_or(0))
        }
        _ => Err(Error::InvalidOption(format!(
            "unknown device `{name}` (expected {DEVICE_NAMES})"
        ))),
    }
}

/// A short name for `device`, as [`by_name`] reads it: `cpu`, `cuda:0`,
/// `metal:0`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The kinds of GPU: the feature and name `by_name` reads, the name people
/// know, whether this build has the feature, and how candle opens one.
type GpuKind = (
    &'static str,
    &'static str,
    bool,
    fn(usize) -> candle_core::Result<Device>,
);
const GPUS: [GpuKind; 2] = [
    ("cuda", "CUDA", cfg!(feature = "cuda"), Device::new_cuda),
    ("metal", "Metal", cfg!(feature = "metal"), Device::new_metal),
];

fn auto() -> Device {
    GPUS.iter()
        .find_map(|&kind| gpu(kind, 0).ok())
        .unwrap_or(Device::Cpu)
}

/// GPU `index` of a kind, when this build was compiled with its `feature`.
fn gpu((feature, label, compiled, open): GpuKind, index: usize) -> Result<Device> {
    let device = format!("{feature}:{index}");
    if !compiled {
        return Err(Error::DeviceUnavailable {
            device,
            reason: format!(
                "this build has no {label} support (it is built with the `{feature}` feature)"
            ),
        });
    }
    open(index).map_err(|e| Error::DeviceUnavailable {
        device,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_and_written_back() {
        assert!(by_name("cpu").unwrap().is_cpu());
        assert!(by_name(" CPU ").unwrap().is_cpu());
        assert_eq!(name(&Device::Cpu), "cpu");
        for bad in ["tpu", "cpu:1", "cuda:x", "auto:0", ""] {
            let err = by_name(bad).unwrap_err().to_string();
            assert!(err.contains(DEVICE_NAMES), "{bad}: {err}");
        }
    }

    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    #[test]
    fn a_build_without_gpu_support_says_so_and_auto_is_the_cpu() {
        assert!(by_name("auto").unwrap().is_cpu());
        let err = by_name("cuda:1").unwrap_err().to_string();
        assert!(
            err.contains("cuda:1") && err.contains("`cuda` feature"),
            "{err}"
        );
        let err = by_name("metal").unwrap_err().to_string();
        assert!(err.contains("`metal` feature"), "{err}");
    }
}
