¤
httpbindefaultÀ>"	peak-ewma*x
httpbin-v1-0
httpbin-v1127.0.0.1:20001"
apphttpbin"
versionv1*,spiffe://cluster.local/ns/default/sa/httpbin:(¶
ratingsdefaultøF"	peak-ewma*|
ratings-good-0ratings-good127.0.0.1:20002"
appratings"
versionv1*,spiffe://cluster.local/ns/default/s[/ratiNgs*€
ratings-broken-0ratings-broken127.0.0.1:20003"
versionv1"
appratings*,spiffe://cluster.local/ns/default/sa/ratings:"è ¿éø›Ï”ë½H(1"#
istio-systemall-unauthenticated