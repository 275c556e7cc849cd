#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ps_globus_sim::transfer_document(data));
