package devstack

// Redact returns the first characters of a secret followed by an ellipsis,
// so that output can show which token is meant without revealing it. Values
// of 24 characters or fewer show no characters at all.
func Redact(secret string) string {
	const keep = 12
	switch {
	case secret == "":
		return "(empty)"
	case len(secret) <= 2*keep:
		return "…"
	default:
		return secret[:keep] + "…"
	}
}
