"""What mail Bridge sends says: digests, replies, and digests' reply addresses."""
