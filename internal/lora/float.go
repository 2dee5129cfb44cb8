package lora

import "math"

// Half-precision conversions. No well-kept Go library covers bfloat16 and IEEE half both,
// and the rules are short: round to nearest even, keep NaN a NaN.

func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf / nan
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp == 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = frac × 2^-24
		f := float32(frac) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	if math.IsNaN(float64(f)) {
		return sign | 0x7e00
	}
	a := math.Abs(float64(f))
	if a >= 65520 { // rounds to inf
		return sign | 0x7c00
	}
	if a < 6.103515625e-05 { // subnormal half: multiples of 2^-24
		return sign | uint16(math.RoundToEven(a*(1<<24)))
	}
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	// round mantissa from 23 to 10 bits, nearest even
	round := mant & 0x1fff
	m := mant >> 13
	if round > 0x1000 || (round == 0x1000 && m&1 == 1) {
		m++
		if m == 0x400 {
			m = 0
			exp++
		}
	}
	return sign | uint16(exp)<<10 | uint16(m)
}

func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if math.IsNaN(float64(f)) {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
