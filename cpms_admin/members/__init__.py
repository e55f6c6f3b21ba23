"""Members: the NIR, postal addresses, the postcode base (places), field rules and the member
records themselves."""
