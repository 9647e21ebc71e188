"""Reading the store: threads as trees, the viewer's queries, readers' marks, exports."""
