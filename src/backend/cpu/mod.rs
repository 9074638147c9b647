//! The f32 reference backend (being written).
