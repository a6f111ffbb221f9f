"""M-Trainer: fine-tunes a shared base CNN at several freeze depths and writes M-Packages."""
