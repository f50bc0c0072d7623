//! PLACEHOLDER: replaced by the profile/env work. Public API other modules rely on:
//! `ProfileParams` (`Serialize` with the 20 fields in dstack's order, meant for
//! `#[serde(flatten)]`; `Default` = all unset) and
//! `ProfileParams::read(obj: &mut Object, cx: &mut Cx, scope: ProfileScope) -> ProfileParams`,
//! which reads the profile fields present in an already-open mapping. `ProfileScope::Run`
//! (runs, presets, profiles.yml: all 20) or `ProfileScope::Fleet` (the fleet subset).
use serde::Serialize;

use crate::de::{Cx, Object};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileScope {
    Run,
    Fleet,
}

/// PLACEHOLDER.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ProfileParams {
    pub backends: Option<Vec<String>>,
}

impl ProfileParams {
    pub fn read(obj: &mut Object<'_>, cx: &mut Cx, _scope: ProfileScope) -> ProfileParams {
        ProfileParams {
            backends: obj.opt(cx, "backends"),
        }
    }
}
