"""Pure domain logic: numpy and the standard library only, no SDKs."""
