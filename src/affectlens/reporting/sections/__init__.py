"""Report sections: each module turns one kind of result into Section objects for the renderer."""
