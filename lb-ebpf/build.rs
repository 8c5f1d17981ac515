use which::which;

fn main() {
    // Rebuild the object when bpf-linker changes (e.g. `cargo xtask setup` reinstalled it).
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
    // bpf-linker's default "expand memcpy in order" leaves LLVM 22's BPF backend unable to
    // lower memset, which LLVM forms from the zero bytes of IPv4-mapped addresses in map
    // keys ("A call to built-in function 'memset' is not supported"). Plain expansion
    // handles both.
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
