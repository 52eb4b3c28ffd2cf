//! The bundled guest services, compiled from `services/` to wasm32 by this
//! crate's build script and embedded here by name.
//!
//! Manifests refer to them as `"module": "bundled:<name>"`; tests and
//! benchmarks use [`get`] directly.
#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The wasm bytes of the bundled service `name`, if there is one.
pub fn get(name: &str) -> Option<&'static [u8]> {
    SERVICES
        .iter()
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, bytes)| *bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ping_and_pong_are_bundled_as_wasm() {
        for name in ["ping", "pong"] {
            let bytes = super::get(name).unwrap_or_else(|| panic!("{name} is not bundled"));
            assert_eq!(&bytes[..4], b"\0asm", "{name} is a wasm module");
        }
        assert!(super::get("nope").is_none());
    }
}
