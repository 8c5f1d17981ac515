fn main() {
    let obj = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
    let mut bpf = aya::Ebpf::load(obj).unwrap();
    let p: &mut aya::programs::Xdp = bpf.program_mut("drlb_xdp").unwrap().try_into().unwrap();
    p.load().unwrap();
    println!("loaded");
}
