"""The request path in order: validate -> dlp -> limits -> route (providers) -> stream back."""
