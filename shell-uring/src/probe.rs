//! Finding out, before anything else, whether this kernel lets us use io_uring.
//!
//! On a kernel without io_uring, or with it disabled (the `kernel.io_uring_disabled`
//! sysctl, a seccomp filter in a container), the binary must stop at once with a message
//! that names the alternative, `ringkv-node`, instead of failing later with a bare errno.

use core::fmt;
use std::io;

/// Why io_uring cannot be used here.
#[derive(Debug)]
pub enum UringUnavailable {
    /// The kernel has no io_uring (ENOSYS): older than 5.1, or built without it.
    NotInKernel,
    /// io_uring exists but this process may not use it (EPERM or EACCES).
    Disabled,
    /// Setting up a ring failed for another reason (often the locked-memory limit).
    SetupFailed(io::Error),
}

impl UringUnavailable {
    /// Classifies the error returned by ring setup.
    pub fn from_setup_error(error: io::Error) -> UringUnavailable {
        match error.raw_os_error() {
            Some(libc::ENOSYS) => UringUnavailable::NotInKernel,
            Some(libc::EPERM) | Some(libc::EACCES) => UringUnavailable::Disabled,
            _ => UringUnavailable::SetupFailed(error),
        }
    }
}

impl fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UringUnavailable::NotInKernel => f.write_str("this kernel has no io_uring support")?,
            UringUnavailable::Disabled => f.write_str(
                "io_uring is disabled for this process (kernel.io_uring_disabled sysctl or a seccomp filter)",
            )?,
            UringUnavailable::SetupFailed(error) => {
                write!(f, "setting up an io_uring instance failed: {error}")?
            }
        }
        f.write_str("; run ringkv-node (the mio build, same flags and data dir) instead")
    }
}

impl std::error::Error for UringUnavailable {}

/// Sets up and drops a small ring to learn whether io_uring works here.
pub fn probe() -> Result<(), UringUnavailable> {
    io_uring::IoUring::new(8)
        .map(drop)
        .map_err(UringUnavailable::from_setup_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setup_failure_names_ringkv_node_as_the_alternative() {
        let cases = [
            (libc::ENOSYS, "no io_uring support"),
            (libc::EPERM, "disabled"),
            (libc::EACCES, "disabled"),
            (libc::ENOMEM, "setting up an io_uring instance failed"),
        ];
        for (errno, cause) in cases {
            let message =
                UringUnavailable::from_setup_error(io::Error::from_raw_os_error(errno)).to_string();
            assert!(message.contains(cause), "{message}");
            assert!(message.contains("run ringkv-node"), "{message}");
        }
    }
}
