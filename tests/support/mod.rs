//! The test bed: real components where they can run here, faithful fakes where they cannot.
#![allow(dead_code)]

pub mod postgres;
pub mod process;
