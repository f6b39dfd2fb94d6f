package wire

import "unicode/utf8"

// A role change asked over the link (Version 3): a node about to become
// Primary while connected sends RolePrimary; its peer answers with
// RoleAnswer, yes when it is Secondary and not about to become Primary
// itself, and from then on counts the sender Primary. So two connected
// nodes never both become Primary on a view of the other that the link
// has not yet brought up to date.
//
//	RolePrimary  empty
//	RoleAnswer   yes u8 (0 or 1), then why not: UTF-8 text, at most
//	             MaxRoleText bytes

// MaxRoleText bounds the text of a RoleAnswer.
const MaxRoleText = 200

// RoleAnswer is the body of a RoleAnswer frame.
type RoleAnswer struct {
	Yes  bool
	Text string // why not
}

// AppendRolePrimary appends a RolePrimary frame.
func AppendRolePrimary(dst []byte) []byte {
	dst, start := beginFrame(dst)
	return endFrame(dst, start, TypeRolePrimary, 0)
}

// AppendRoleAnswer appends a RoleAnswer frame; a longer text is cut.
func AppendRoleAnswer(dst []byte, a RoleAnswer) []byte {
	dst, start := beginFrame(dst)
	yes := byte(0)
	if a.Yes {
		yes = 1
	}
	text := a.Text
	for len(text) > MaxRoleText {
		_, n := utf8.DecodeLastRuneInString(text)
		text = text[:len(text)-n]
	}
	dst = append(append(dst, yes), text...)
	return endFrame(dst, start, TypeRoleAnswer, 0)
}

// ParseRoleAnswer parses the body of a RoleAnswer frame.
func ParseRoleAnswer(body []byte) (RoleAnswer, error) {
	switch {
	case len(body) < 1 || len(body) > 1+MaxRoleText:
		return RoleAnswer{}, malformed(TypeRoleAnswer, "%d bytes, want 1 to %d", len(body), 1+MaxRoleText)
	case body[0] > 1:
		return RoleAnswer{}, malformed(TypeRoleAnswer, "yes byte %d, want 0 or 1", body[0])
	case !utf8.Valid(body[1:]):
		return RoleAnswer{}, malformed(TypeRoleAnswer, "text is not UTF-8")
	}
	return RoleAnswer{Yes: body[0] == 1, Text: string(body[1:])}, nil
}
