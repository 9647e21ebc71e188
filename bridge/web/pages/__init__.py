"""The viewer's pages: reading, writing, the reader's marks, downloads, feeds, admin."""
