"""The request pipeline: the exchange every filter sees, the filter chain and its order, and the
proxy that relays an answer (streamed or not) through them."""
