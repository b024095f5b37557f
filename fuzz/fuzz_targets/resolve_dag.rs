#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipfs_image_fuzz::resolve_dag(data));
