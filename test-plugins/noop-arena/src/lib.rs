//! Test plugin: the no-op handler (the same code as `noop-handler`) with an arena
//! allocator: allocating moves a pointer, freeing does nothing. A handler's instance lives
//! for one batch and its memory goes with it, so nothing needs freeing before then.

include!("../../noop-handler/src/body.rs");

// Safety: a component instance runs on one thread.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::LeakingAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::LeakingAllocator::new()) };
