//! The scenario model: what a scenario file says, and how it is loaded and validated.

pub mod load;
pub mod model;
pub mod schema;
pub mod select;

pub use load::{load_file, load_paths, parse};
pub use model::*;
pub use select::Selection;
