//! The suite parser (`suite::parse`): any text is a suite or a one-line error that names the
//! file, the line and the field; never a panic. A suite that parses also builds its check
//! names (`verify --list`) and its RBAC (`smokecheck rbac`), which read every field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smokecheck::{checks, rbac, suite};

fuzz_target!(|data: &[u8]| {
    // `suite::read` rejects a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match suite::parse(text, "fuzz.yaml") {
        Ok(suite) => {
            let catalog = checks::catalog(&suite);
            for alias in suite.litellm.aliases.iter().flatten() {
                for family in &catalog.families {
                    let _ = family.name_for(alias);
                }
            }
            let _ = rbac::manifests(&suite);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.contains('\n'),
                "a suite error spans lines: {message:?}"
            );
        }
    }
});
