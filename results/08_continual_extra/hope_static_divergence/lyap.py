# Lyapunov exponent of the homogeneous delta-rule-with-momentum recurrence
# S_t = b S_{t-1} - e D_{t-1} k k^T ; D_t = a D_{t-1} + S_t   (one row of D: vector in R^dk)
import torch, math, sys
torch.manual_seed(0)
def lyap(a,b,e,dk=64,rank=None,T=4000,corr=0.0):
    D=torch.randn(dk,dtype=torch.float64); S=torch.randn(dk,dtype=torch.float64)
    n=math.sqrt(D@D+S@S); D/=n; S/=n; acc=0.0
    basis=torch.linalg.qr(torch.randn(dk,rank or dk,dtype=torch.float64))[0]
    k_prev=None
    for t in range(T):
        k=basis@torch.randn(basis.shape[1],dtype=torch.float64); k/=k.norm()
        if k_prev is not None and corr>0:
            k=corr*k_prev+(1-corr)*k; k/=k.norm()
        k_prev=k
        S=b*S-e*(D@k)*k
        D=a*D+S
        n=math.sqrt(D@D+S@S); acc+=math.log(n); D/=n; S/=n
    return acc/T
for a,b,e in [(0.982,0.5,0.5),(0.999,0.9,0.5),(0.999,0.99,0.5),(0.999,0.99,0.99),(1,0.999,0.99),(0.999,0.999,0.01),(0.99,0.99,0.1)]:
    for rank,corr in [(None,0),(4,0),(1,0),(None,0.9)]:
        print(a,b,e,'rank',rank,'corr',corr,'lyap/token %.5f'%lyap(a,b,e,rank=rank,corr=corr))
