"""Sans-I/O protocol state machines: pure code, no trio, time passed in.

The trio shell feeds them datagrams and the current time and performs the
events they return (send these bytes, deliver this response, this exchange
failed).
"""
