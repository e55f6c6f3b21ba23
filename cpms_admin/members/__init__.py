"""Members: the NIR, postal addresses, field rules and the member records themselves."""
