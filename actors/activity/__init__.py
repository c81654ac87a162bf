"""Activities: exe-unit children on the provider, views of them on the requestor."""
