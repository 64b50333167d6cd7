//! `Secret<T>`: the one home of every password, token and key in glci.
//!
//! `Debug` and `Display` print `***`, so a secret inside a config struct, an
//! error or a log line never shows its value; reading it takes an explicit
//! `expose()`, which is easy to grep for. This file only wraps values: it does
//! no I/O and knows nothing about where secrets come from (`config`, `auth.rs`).

use std::fmt;
use std::ops::Deref;

/// What `Debug` and `Display` print instead of the value.
pub const MASK: &str = "***";

/// A value that must not be printed. `Secret` alone means `Secret<String>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// Unwraps the value, giving up the protection.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: Deref> Secret<T> {
    /// Borrows the value (`&str` for `Secret<String>`). Call it only where the
    /// value leaves for its destination (an HTTP header, `docker login` stdin).
    pub fn expose(&self) -> &T::Target {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask_the_value() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert!(!format!("{s:#?}").contains("hunter2"));
    }

    #[test]
    fn masked_inside_derived_debug() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Login {
            user: String,
            password: Secret,
        }
        let l = Login { user: "u".into(), password: "hunter2".into() };
        let text = format!("{l:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"), "{text}");
    }

    #[test]
    fn expose_returns_the_value() {
        let s = Secret::new(String::from("hunter2"));
        let v: &str = s.expose();
        assert_eq!(v, "hunter2");
        assert_eq!(s.into_inner(), "hunter2");
    }

    #[test]
    fn clone_and_eq_compare_values() {
        let a = Secret::from("x");
        assert_eq!(a.clone(), a);
        assert_ne!(a, Secret::from("y"));
    }

    #[test]
    fn works_for_bytes() {
        let k: Secret<Vec<u8>> = Secret::new(vec![1, 2, 3]);
        assert_eq!(k.expose(), &[1, 2, 3]);
        assert_eq!(format!("{k:?}"), "***");
    }
}
