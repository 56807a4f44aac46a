//! Certificates for the herd (placeholder; being written).
