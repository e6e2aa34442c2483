"""Pure imaging library: decode, flat-field, segment, measure, synthesise. Arrays in, arrays out."""
