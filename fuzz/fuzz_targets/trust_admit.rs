#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ps_globus::fuzzing::trust_admit(data));
