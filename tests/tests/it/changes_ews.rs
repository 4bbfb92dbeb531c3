//! Cheap change detection (issue 19): see the module contents.
