//! Verification: does each person's calendar hold exactly what Xpert says it should?

pub mod compare;
