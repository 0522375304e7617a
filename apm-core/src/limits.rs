//! Bounds on what a peer may send, checked while decoding.

/// Limits applied by the decoder. Every one of them is a bound on memory or
/// work that a peer could otherwise choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame, counted from the header's first byte to the
    /// end of the body (the length prefix's value). Default 1 MiB.
    pub max_frame_len: u32,
    /// Longest channel name or user id, in bytes. Default 128.
    pub max_name_len: usize,
}

impl Limits {
    /// Default largest frame: 1 MiB.
    pub const DEFAULT_MAX_FRAME_LEN: u32 = 1024 * 1024;
    /// Default longest name: 128 bytes.
    pub const DEFAULT_MAX_NAME_LEN: usize = 128;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
            max_name_len: Self::DEFAULT_MAX_NAME_LEN,
        }
    }
}
