//! PLACEHOLDER: replaced by the fleet/gateway/volume/preset work.
use serde::Serialize;

use crate::de::{Cx, FromNode};
use crate::run::placeholder;
use crate::yaml::Node;

placeholder!(PresetConfiguration);
