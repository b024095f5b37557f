#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipfs_image_fuzz::range_header(data));
