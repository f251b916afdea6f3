//! ConvTranspose2d with arbitrary shapes, parameters and data: every pass against the
//! reference, and errors, never panics, for invalid input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: dcgan_fuzz::Case| dcgan_fuzz::check(&case, true));
