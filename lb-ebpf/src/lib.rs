// Empty library target: lets lb-userspace build-depend on lb-ebpf so cargo rebuilds the
// embedded object when this crate changes (see aya-build).
#![no_std]
