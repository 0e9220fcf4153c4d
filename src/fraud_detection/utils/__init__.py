"""Cross-cutting helpers: logging set-up and atomic file I/O."""
