//! Session loop tests.
