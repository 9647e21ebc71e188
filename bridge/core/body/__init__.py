"""A message body: HTML made safe and plain, quotes, signatures and disclaimers."""
