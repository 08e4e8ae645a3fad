"""The notebook face: ``%ultron`` magics, display objects and widgets."""
