//! Placeholder.
/// Placeholder.
pub struct Renderer;
/// Placeholder.
#[derive(Debug)]
pub struct RenderError;
