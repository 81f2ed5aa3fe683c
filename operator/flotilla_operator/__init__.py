"""The Flotilla operator: kopf handlers (thin) over pure manifest builders."""
